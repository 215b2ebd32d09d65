"""Choosing settings by training them on one fold: what `hierclf tune-fine` runs."""
