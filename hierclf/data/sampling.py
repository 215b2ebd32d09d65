"""Which training rows an epoch sees: all of them shuffled, classes drawn equally often, or at
most a fixed number per class, drawn anew each epoch."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler


class ClassCapSampler(Sampler[int]):
    """Each epoch, at most `cap` rows of every class, a fresh random choice each time, shuffled:
    a dominant class stops swamping the epoch, yet over epochs every row of it is seen."""

    def __init__(self, labels: np.ndarray, cap: int, generator: torch.Generator):
        self.rows_of_class = [np.flatnonzero(labels == label) for label in np.unique(labels)]
        self.cap, self.generator = cap, generator

    def __len__(self) -> int:
        return sum(min(len(rows), self.cap) for rows in self.rows_of_class)

    def __iter__(self) -> Iterator[int]:
        chosen = []
        for rows in self.rows_of_class:
            order = torch.randperm(len(rows), generator=self.generator).numpy()
            chosen.append(rows[order[:self.cap]])
        rows = np.concatenate(chosen)
        return iter(rows[torch.randperm(len(rows), generator=self.generator).numpy()].tolist())


def build_sampler(kind: str, cap: int, labels: np.ndarray, generator: torch.Generator) -> Sampler[int] | None:
    """None (the loader shuffles), a balanced WeightedRandomSampler, or a ClassCapSampler.

    Balanced draws as many rows as the epoch would have had (or `cap` per class with a cap),
    each class equally likely: rare rows repeat, common ones are skipped now and then."""
    labels = np.asarray(labels)
    if kind == "balanced":
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.double)
        draws = cap * len(classes) if cap else len(labels)
        return WeightedRandomSampler(weights, num_samples=draws, replacement=True, generator=generator)
    if cap:
        return ClassCapSampler(labels, cap, generator)
    return None
