"""Randomness kept local: a seed in, the same draws out, and the process's global generators left
as they were. Loaders, samplers and augmentation take generators and seeds of their own; what
can only draw from a global generator (a model's initial weights, dropout, timm's Mixup) runs
inside one of these, which is undone on the way out."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


@contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """torch's global generators (CPU and every CUDA device) seeded with `seed` inside the block,
    and restored after it."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class NumpyState:
    """A numpy global random state of its own, seeded like `np.random.seed(seed)`, swapped in only
    inside `active()`: for a library that draws from `np.random` (timm's Mixup)."""

    def __init__(self, seed: int):
        self._state = np.random.RandomState(seed % 2**32).get_state()

    def get_state(self) -> tuple:
        return self._state

    def set_state(self, state: tuple) -> None:
        self._state = state

    @contextmanager
    def active(self) -> Iterator[None]:
        outside = np.random.get_state()
        np.random.set_state(self._state)
        try:
            yield
        finally:
            self._state = np.random.get_state()
            np.random.set_state(outside)


def derive_seed(seed: int, *purpose: int) -> int:
    """A seed for another purpose (training after initialisation, say), independent of `seed`'s
    own stream yet fixed by it: numpy's SeedSequence of (seed, *purpose)."""
    return int(np.random.SeedSequence([seed, *purpose]).generate_state(1)[0])
