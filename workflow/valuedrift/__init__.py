"""valuedrift: trace how post-training shapes a language model's values."""

__version__ = "0.1.0"

STANCES = ("support", "neutral", "oppose")
