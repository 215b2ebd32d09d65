"""Data: where images come from (sources), how they are decoded, and how they reach a model."""
from hierclf.data.items import Items
from hierclf.data.sources import load_input_items, load_training_items

__all__ = ["Items", "load_input_items", "load_training_items"]
