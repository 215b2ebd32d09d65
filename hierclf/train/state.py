"""What a fit holds as it goes (`TrainingState`) and what it leaves (`FitResult`): the one place
`fit`, its checkpoints and its callers agree on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from hierclf.train.mixing import BatchMixer


@dataclass
class FitResult:
    """What a fit leaves: the best epoch's weights and its validation probabilities."""

    best_epoch: int
    best_value: float
    best_state: dict[str, torch.Tensor]
    val_probs: np.ndarray
    val_rows: np.ndarray
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    start: dict | None = None
    """The starting model's validation figures (epoch 0), where it was scored: LP-FT's probe."""


@dataclass(eq=False)
class TrainingState:
    """Everything the next epoch depends on: the weights and their moving average, the optimiser,
    its schedule and loss scaler, the mixer, the training loader (whose generators draw the order
    and the augmentation), the epochs' records (and the start's, epoch 0, where it was scored),
    the best epoch so far and the counters. A
    checkpoint (`hierclf.train.checkpoint`) captures exactly this, and restores it."""

    model: torch.nn.Module
    ema: ModelEmaV3 | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    mixer: BatchMixer | None
    loader: DataLoader
    history: list[dict] = field(default_factory=list)
    start: dict | None = None
    best: FitResult | None = None
    epochs_without_gain: int = 0
    updates: int = 0

    @property
    def kept(self) -> torch.nn.Module:
        """The weights that are validated and kept: the moving average with EMA, else the model."""
        return self.ema.module if self.ema is not None else self.model
