"""An in-memory uint8 cache of a stage's images, decoded and resized once for every fold and
epoch: for datasets that fit in the memory the recipe allows (`cache_mb`)."""
from __future__ import annotations

import logging
from typing import Sequence

import albumentations as A
import numpy as np
from torch.utils.data import DataLoader, Dataset

from hierclf.data.items import Items

log = logging.getLogger(__name__)


class _Resized(Dataset):
    """Rows decoded and resized to the input size, a batch at a time, as uint8."""

    def __init__(self, items: Items, size: int, channels: int):
        self.items, self.channels, self.size = items, channels, size
        self.resize = A.Resize(size, size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitems__(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        pixels = [self.resize(image=self.items.image(row, self.channels, 2 * self.size))["image"] for row in rows]
        return np.asarray(rows), np.stack(pixels)


def cached_items(items: Items, size: int, channels: int, budget_mb: int, workers: int = 0) -> Items:
    """`items` with every image decoded and resized once into one uint8 array, when that array
    fits in `budget_mb` MiB; else `items` unchanged. Decoding runs in `workers` processes."""
    needed = len(items) * size * size * channels
    if budget_mb <= 0:
        return items
    if needed > budget_mb * 2**20:
        log.info("cache: %d images at %d px need %.0f MiB, more than cache_mb = %d; decoding every epoch",
                 len(items), size, needed / 2**20, budget_mb)
        return items
    pixels = np.empty((len(items), size, size, channels), dtype=np.uint8)
    loader = DataLoader(_Resized(items, size, channels), batch_size=256, num_workers=workers,
                        collate_fn=_as_is)
    for rows, batch in loader:
        pixels[rows] = batch
    log.info("cache: %d images decoded once at %d px (%.0f MiB)", len(items), size, needed / 2**20)
    return Items(ids=items.ids, labels=items.labels, class_names=items.class_names, images=pixels,
                 groups=items.groups)


def _as_is(batch):
    return batch
