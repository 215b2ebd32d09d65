"""Mixup and CutMix by timm, for one softmax or for attribute heads.

timm's `Mixup` mixes a batch with its reverse and returns one-hot targets mixed alike. With
heads, it mixes the joint class (mask·6 + gender·3 + age); summing the mixed joint
probabilities over the other heads gives each head's mixed target, the same λ throughout.
Label smoothing stays with the loss (smoothing is linear, so mixing first changes nothing)."""
from __future__ import annotations

from typing import Sequence

import torch
from timm.data import Mixup

from hierclf.recipe import StageConfig


class BatchMixer:
    """Mixes (images, targets) in place of a batch and returns the targets as probabilities:
    one row per image over the classes, or each head's block side by side."""

    def __init__(self, stage: StageConfig, num_classes: int, head_sizes: Sequence[int] = ()):
        self.head_sizes = tuple(head_sizes)
        self.num_classes = num_classes
        self.mixup = Mixup(mixup_alpha=stage.mixup_alpha, cutmix_alpha=stage.cutmix_alpha, prob=stage.mix_prob,
                           switch_prob=stage.mix_switch_prob, mode="batch", label_smoothing=0.0,
                           num_classes=num_classes)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = self._joint(targets)
        even = len(images) - len(images) % 2  # timm mixes pairs; an odd last row stays itself
        soft = torch.nn.functional.one_hot(joint, self.num_classes).float()
        if even:
            _, soft[:even] = self.mixup(images[:even], joint[:even])
        return images, self._per_head(soft)

    def _joint(self, targets: torch.Tensor) -> torch.Tensor:
        if not self.head_sizes:
            return targets
        joint = torch.zeros_like(targets[:, 0])
        for column, size in enumerate(self.head_sizes):
            joint = joint * size + targets[:, column]
        return joint

    def _per_head(self, soft: torch.Tensor) -> torch.Tensor:
        if not self.head_sizes:
            return soft
        grid = soft.view(len(soft), *self.head_sizes)
        axes = range(1, len(self.head_sizes) + 1)
        return torch.cat([grid.sum(dim=tuple(a for a in axes if a != axis)) for axis in axes], dim=1)


def build_mixer(stage: StageConfig, num_classes: int, head_sizes: Sequence[int] = ()) -> BatchMixer | None:
    if stage.mixup_alpha > 0 or stage.cutmix_alpha > 0:
        return BatchMixer(stage, num_classes, head_sizes)
    return None
