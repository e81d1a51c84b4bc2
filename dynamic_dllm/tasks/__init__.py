"""Synthetic task suite and training recipe of the shipped tiny model."""
