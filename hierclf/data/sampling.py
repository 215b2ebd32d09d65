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


def build_sampler(kind: str, cap: int, labels: np.ndarray, generator: torch.Generator,
                  share: float = 1.0) -> Sampler[int] | None:
    """None (the loader shuffles), a balanced WeightedRandomSampler, or a ClassCapSampler.

    Balanced draws as many rows as the epoch would have had (or `cap` per class with a cap),
    each class equally likely: rare rows repeat, common ones are skipped now and then. `share`
    (below 1) draws that part of such an epoch."""
    labels = np.asarray(labels)
    if kind == "balanced":
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        weights = torch.as_tensor(1.0 / counts[inverse], dtype=torch.double)
        draws = cap * len(classes) if cap else len(labels)
        return WeightedRandomSampler(weights, num_samples=max(1, round(draws * share)), replacement=True,
                                     generator=generator)
    if cap:
        return ClassCapSampler(labels, max(1, round(cap * share)), generator)
    return None


class ShardSampler(Sampler[int]):
    """One process's share of a training epoch when several train together: every process draws
    the same order from `base` (one seed), and takes every `world`-th row of it from its `rank`,
    so the processes' batches together are the batch one process would have drawn. With
    `drop_to` (the global batch, when the last short batch is dropped) the order is cut to a
    multiple of it; otherwise it is padded from its start to a multiple of `world`, so every
    process takes as many batches and none waits for the others' gradients in vain."""

    def __init__(self, base: Sampler[int], rank: int, world: int, drop_to: int = 0):
        self.base, self.rank, self.world, self.drop_to = base, rank, world, drop_to

    def _total(self) -> int:
        drawn = len(self.base)
        return drawn // self.drop_to * self.drop_to if self.drop_to else -(-drawn // self.world) * self.world

    def __len__(self) -> int:
        return self._total() // self.world

    def __iter__(self) -> Iterator[int]:
        # a generator: the base draws when the loader asks for the first batch, as it does unsharded
        order = np.resize(np.fromiter(self.base, dtype=np.int64), self._total())
        yield from order[self.rank::self.world].tolist()
