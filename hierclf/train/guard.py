"""The warnings that tell a user fine-tuning is losing what the pretrained backbone knew, while it
trains: a first epoch whose training loss is far above a uniform guess's (a new head that starts
too large, or too high a rate, wrecks the features it sits on), and a fold whose halfway epoch,
or whose best epoch, scores below the linear probe on the same rows. Each is one log line naming
the likely cause and the keys to change.

Why halfway, not after the first epoch: in every healthy fold measured (three sets, ten folds;
docs/benchmarks.md) the first epoch, still warming up with the backbone moving, scored below the
probe, and every one ended 10 points or more above it; at half the epochs all were above it, and
the broken runs (timm's head sized for 1,000 classes) that ended below it already were."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from hierclf.train.losses import LayoutLoss

FAR_ABOVE = 1.2
"""A first epoch whose mean training loss is this many times a uniform guess's is wrecking the
features: a fine-tuned model should be below the guess within its first epoch."""

KEYS = "lower lr, or set freeze_epochs (the head alone first), backbone_lr or layer_decay (the backbone slower)"


@dataclass(frozen=True)
class Guard:
    """What one fold of a stage from pretrained weights is checked against."""

    name: str
    chance_loss: float
    probe_macro_f1: float | None = None
    checked_epoch: int | None = 1
    """The epoch compared with the probe while the fold trains (`checked_epoch`; None: only the end)."""
    probe_seconds: float = 0.0
    """What the probe took (features and regression): with LP-FT, part of the fold's training."""

    def after_epoch(self, entry: dict[str, Any]) -> list[str]:
        """The warnings an epoch's figures (a metrics.jsonl line) call for."""
        warnings = []
        if entry["epoch"] == 1 and entry["train_loss"] > FAR_ABOVE * self.chance_loss:
            warnings.append(f"{self.name}: the first epoch's training loss {entry['train_loss']:.3f} is "
                            f"{entry['train_loss'] / self.chance_loss:.1f}× a uniform guess's ({self.chance_loss:.3f}): "
                            f"the pretrained features are being overwritten (a new head starting too large, or too "
                            f"high a rate); {KEYS}")
        if (self.probe_macro_f1 is not None and entry["epoch"] == self.checked_epoch
                and entry["val_macro_f1"] < self.probe_macro_f1):
            warnings.append(f"{self.name}: after epoch {entry['epoch']} the validation macro-F1 "
                            f"{entry['val_macro_f1']:.4f} is below the linear probe's on this fold "
                            f"({self.probe_macro_f1:.4f}): fine-tuning is losing what the backbone knew; {KEYS}")
        return warnings

    def at_end(self, best_macro_f1: float) -> list[str]:
        """The warning a finished fold calls for: its best epoch below the probe."""
        if self.probe_macro_f1 is None or best_macro_f1 >= self.probe_macro_f1:
            return []
        return [f"{self.name}: its best epoch ({best_macro_f1:.4f} validation macro-F1) does not beat the linear probe "
                f"on this fold ({self.probe_macro_f1:.4f}); the probe alone would serve better. {KEYS[0].upper()}"
                f"{KEYS[1:]}"]


def checked_epoch(epochs: int, warmup_epochs: int, freeze_epochs: int) -> int | None:
    """The epoch a fold is compared with its probe while it trains: half its epochs, and never one
    still warming up or training the head alone. None where that is the last epoch: the check at
    the end says it once."""
    epoch = max(math.ceil(epochs / 2), warmup_epochs + 1, freeze_epochs + 1)
    return epoch if epoch < epochs else None


def chance_loss(criterion: LayoutLoss, targets: np.ndarray) -> float:
    """The stage's loss for a uniform guess (zero logits) on `targets` (N×H): ln C for a plain cross
    entropy, the weighted sum over heads, focal's and smoothing's own value alike."""
    rows = torch.from_numpy(targets[:4096])
    with torch.no_grad():
        return float(criterion(torch.zeros(len(rows), criterion.layout.width), rows))
