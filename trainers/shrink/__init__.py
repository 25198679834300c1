"""Shrunk copies of a trained classifier: int8 or structured pruning; `scripts/shrink.py` runs `copies.shrink`."""
