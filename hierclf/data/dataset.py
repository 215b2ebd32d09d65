"""From rows to batches: decoding, albumentations transforms, and a DataLoader."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset

from hierclf.data.augment import augment_transforms
from hierclf.data.items import UNKNOWN_LABEL, Items
from hierclf.data.sampling import build_sampler


class ImageDataset(Dataset):
    """Yields (image tensor, target, row). Decoding happens here, in the loader's workers. Targets
    are one class per row, or one column per attribute head."""

    def __init__(self, items: Items, targets: np.ndarray | None, transform: A.Compose, channels: int):
        self.items = items
        self.targets = (np.full(len(items), UNKNOWN_LABEL, dtype=np.int64) if targets is None
                        else np.asarray(targets, dtype=np.int64))
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The image, its target (a class, or one value per attribute head) and its row."""
        pixels = self.items.image(row, self.channels)
        return self.transform(image=pixels)["image"], torch.as_tensor(self.targets[row]), row


def build_transform(img_size: int, mean: Sequence[float], std: Sequence[float],
                    augment: str | Sequence[Mapping[str, Any]] = "none", seed: int | None = None) -> A.Compose:
    """Resize, the augmentation (a preset or the recipe's list), normalise, to a CHW float tensor.
    The image has as many channels as `mean` has values."""
    return A.Compose([A.Resize(img_size, img_size), *augment_transforms(augment, channels=len(mean)),
                      A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0),
                      ToTensorV2()], seed=seed)


def make_loader(dataset: ImageDataset, batch_size: int, *, shuffle: bool, workers: int, device: torch.device,
                seed: int = 0, drop_last: bool = False, sampler: str = "shuffle", class_cap: int = 0,
                sample_labels: np.ndarray | None = None) -> DataLoader:
    """A loader over `dataset`. With `shuffle`, `sampler`/`class_cap` may replace plain shuffling
    (balanced classes, at most class_cap rows per class), by `sample_labels`' classes."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    chosen = None
    if shuffle and (sampler != "shuffle" or class_cap):
        labels = dataset.targets if sample_labels is None else sample_labels
        chosen = build_sampler(sampler, class_cap, labels, generator)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and chosen is None, sampler=chosen,
                      num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last,
                      persistent_workers=workers > 0, worker_init_fn=_seed_worker, generator=generator)


def _seed_worker(worker_id: int) -> None:
    """Each worker starts with a copy of the transform's random state; give each its own,
    derived from the loader's seed, so augmentation differs across workers yet reproduces."""
    info = torch.utils.data.get_worker_info()
    info.dataset.transform.set_random_seed(info.seed % 2**32)
