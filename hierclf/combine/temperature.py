"""Temperature scaling (Guo et al. 2017): probabilities p become softmax(log p / T), one T per
output block, chosen to minimise the negative log-likelihood of out-of-fold rows. T > 1 softens
an over-confident stage, T < 1 sharpens a timid one; the argmax never changes.

The scaling is `BlockTemperatures`, one torch module: the exported graph traces it, and the
fit, `evaluate` and `predict` call it on arrays, so they cannot drift apart."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from hierclf.combine.arithmetic import tensor


class BlockTemperatures(torch.nn.Module):
    """An output of blocks of `sizes` side by side, each block scaled by its temperature."""

    def __init__(self, sizes: Sequence[int], temperatures: Sequence[float]):
        super().__init__()
        self.sizes, self.temperatures = [int(size) for size in sizes], [float(t) for t in temperatures]

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.cat([(block.clamp(1e-12, 1.0).log() / t).softmax(1)
                          for block, t in zip(probs.split(self.sizes, dim=1), self.temperatures)], dim=1)


def scaled_blocks(probs: np.ndarray, sizes: Sequence[int], temperatures: Sequence[float]) -> np.ndarray:
    """`BlockTemperatures` on an array (in float64; float32 out)."""
    with torch.no_grad():
        return BlockTemperatures(sizes, temperatures)(tensor(probs)).numpy().astype(np.float32)


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row, in float64."""
    with torch.no_grad():
        return BlockTemperatures([np.shape(probs)[1]], [temperature])(tensor(probs)).numpy()


TEMPERATURES = (0.05, 20.0)
"""The range a fitted temperature lies in."""


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (in TEMPERATURES) that minimises the negative log-likelihood of `targets`."""
    rows = np.arange(len(targets))

    def nll(log_temperature: float) -> float:
        return float(-np.log(np.clip(scaled(probs, np.exp(log_temperature))[rows, targets], 1e-15, 1.0)).mean())

    found = minimize_scalar(nll, bounds=tuple(np.log(TEMPERATURES)), method="bounded")
    return float(np.exp(found.x))
