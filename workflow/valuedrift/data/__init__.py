"""Data for the real study: hub datasets normalized into the project's schemas."""
