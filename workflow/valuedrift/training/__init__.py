"""Training: one entry point over TRL for SFT and every preference algorithm."""
