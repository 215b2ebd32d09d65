"""Losses by recipe key: cross entropy or focal, class weights, label smoothing, hard or soft
(mixup) targets, and the weighted sum over an output's blocks (attribute heads).

timm has label smoothing and soft-target cross entropy, but neither takes class weights or a
focal term, so one loss of ours covers every combination.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from hierclf.errors import RecipeError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.recipe.schema import HeadConfig, LossConfig


class FocalLoss(torch.nn.Module):
    """Cross entropy scaled by (1 − p_t)^γ (Lin et al., 2017): examples the model already gets
    right with confidence count less, so rare and hard classes weigh more. γ = 0 is exactly
    cross entropy, class weights and label smoothing included. Tune γ: the users' write-ups
    found a fixed γ = 2 can hurt before it helps. (Focal loss's α is `weight`, per class.)

    Targets are class indices, or rows of class probabilities (mixup, cutmix): the loss of a
    probability row is the same mix of the losses of its classes, so a one-hot row costs what
    its index does."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.is_floating_point():
            return self._soft(logits, targets)
        per_row = F.cross_entropy(logits, targets, weight=self.weight, reduction="none",
                                  label_smoothing=self.label_smoothing)
        if self.gamma:
            p_true = logits.float().softmax(1).gather(1, targets[:, None]).squeeze(1)
            per_row = (1.0 - p_true).clamp_min(0.0).pow(self.gamma) * per_row
        # the same normalisation as cross entropy's mean: by the targets' total weight
        total = self.weight[targets].sum() if self.weight is not None else per_row.new_tensor(len(targets))
        return per_row.sum() / total.clamp_min(1e-12)

    def _soft(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Σ_c t_c · (the loss of class c as target), normalised by Σ_c t_c · w_c per row: the
        per-row formula of `F.cross_entropy` with weights and smoothing, mixed by the targets."""
        log_p = logits.float().log_softmax(1)
        weight = self.weight if self.weight is not None else log_p.new_ones(log_p.shape[1])
        smoothing = self.label_smoothing / log_p.shape[1] * -(log_p * weight).sum(1, keepdim=True)
        per_class = (1.0 - self.label_smoothing) * weight * -log_p + smoothing
        if self.gamma:
            per_class = (1.0 - log_p.exp()).clamp_min(0.0).pow(self.gamma) * per_class
        return (targets * per_class).sum() / (targets * weight).sum().clamp_min(1e-12)


def class_weight_tensor(setting: LossConfig, targets: np.ndarray, num_classes: int, key: str) -> torch.Tensor | None:
    """Per-class weights: none, balanced (n / (k · count), scikit-learn's formula; a class with no
    training rows gets weight 1), or the recipe's list."""
    weights = setting.class_weights
    if weights == "none":
        return None
    if weights == "balanced":
        present = np.unique(targets)
        result = np.ones(num_classes)
        result[present] = compute_class_weight("balanced", classes=present, y=targets)
        return torch.as_tensor(result, dtype=torch.float32)
    if len(weights) != num_classes:
        raise RecipeError(f"{key}.class_weights has {len(weights)} numbers for {num_classes} classes")
    if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
        raise RecipeError(f"{key}.class_weights: expected numbers ≥ 0, not all 0; got {list(weights)}")
    return torch.as_tensor(weights, dtype=torch.float32)


def build_loss(setting: LossConfig, targets: np.ndarray, num_classes: int, key: str) -> torch.nn.Module:
    """The loss of one softmax output, trained on `targets` (class weights may depend on them)."""
    weight = class_weight_tensor(setting, targets, num_classes, key)
    gamma = setting.focal_gamma if setting.loss == "focal" else 0.0
    return FocalLoss(gamma, weight, setting.label_smoothing)


class LayoutLoss(torch.nn.Module):
    """The weighted sum of each output block's own loss, over the blocks' logits side by side: for
    one block, its loss; with attribute heads, every head's.

    A block's weight may change by epoch (`weight_schedule`), as B-CNN shifts its loss from the
    coarse branches to the fine ones; `set_epoch` picks the weights of the epoch about to run. The
    loss knows the layout it scores, and `fit` reads it from there."""

    def __init__(self, layout: OutputLayout, losses: Sequence[torch.nn.Module], settings: Sequence[HeadConfig]):
        super().__init__()
        self.layout, self.sizes, self.settings = layout, layout.sizes, tuple(settings)
        self.losses = torch.nn.ModuleList(losses)
        self.weights = [setting.weight_at(1) for setting in self.settings]

    def set_epoch(self, epoch: int) -> None:
        self.weights = [setting.weight_at(epoch) for setting in self.settings]

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros(())
        # targets: a class per block (N×H), or (mixup) each block's class probabilities side by side
        columns = targets.split(self.sizes, 1) if targets.is_floating_point() else targets.unbind(1)
        for weight, loss, block_logits, block_targets in zip(self.weights, self.losses, logits.split(self.sizes, 1),
                                                             columns):
            if weight:
                total = total + weight * loss(block_logits, block_targets)
        return total


def build_layout_loss(layout: OutputLayout, settings: Sequence[HeadConfig], keys: Sequence[str],
                      targets: np.ndarray) -> LayoutLoss:
    """A stage's loss: each block's own (its `settings`, named `keys` in messages), trained on
    `targets` (N×H; balanced class weights count each block's column)."""
    losses = [build_loss(setting, targets[:, column], block.size, key)
              for column, (block, setting, key) in enumerate(zip(layout.blocks, settings, keys))]
    return LayoutLoss(layout, losses, settings)
