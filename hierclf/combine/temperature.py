"""Temperature scaling (Guo et al. 2017): probabilities p become softmax(log p / T), one T per
output block, chosen to minimise the negative log-likelihood of out-of-fold rows. T > 1 softens
an over-confident stage, T < 1 sharpens a timid one; the argmax never changes."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(1, keepdims=True)


TEMPERATURES = (0.05, 20.0)
"""The range a fitted temperature lies in."""


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (in TEMPERATURES) that minimises the negative log-likelihood of `targets`."""
    rows = np.arange(len(targets))

    def nll(log_temperature: float) -> float:
        return float(-np.log(np.clip(scaled(probs, np.exp(log_temperature))[rows, targets], 1e-15, 1.0)).mean())

    found = minimize_scalar(nll, bounds=tuple(np.log(TEMPERATURES)), method="bounded")
    return float(np.exp(found.x))


def scaled_blocks(probs: np.ndarray, sizes: Sequence[int], temperatures: Sequence[float]) -> np.ndarray:
    """An output of blocks of `sizes` side by side, each scaled by its temperature (float32)."""
    blocks = np.split(np.asarray(probs, dtype=np.float64), np.cumsum(sizes)[:-1], axis=1)
    return np.concatenate([scaled(block, t) for block, t in zip(blocks, temperatures)], axis=1).astype(np.float32)
