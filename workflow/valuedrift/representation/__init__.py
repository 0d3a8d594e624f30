"""The representation probe: hidden states of every layer on a fixed held-out pair set, linear probes, and similarity to the starting model."""
