"""Mixup and CutMix by timm, for any output layout.

timm's `Mixup` mixes a batch with its reverse and returns one-hot targets mixed alike. It mixes
the joint class (for one block, the class itself; with heads, mask·6 + gender·3 + age); each
block's marginal of the mixed joint target is that block's mixed target, the same λ throughout.
Label smoothing stays with the loss (smoothing is linear, so mixing first changes nothing)."""
from __future__ import annotations

import torch
from timm.data import Mixup

from hierclf.hierarchy.layout import OutputLayout
from hierclf.recipe.schema import MixConfig
from hierclf.seeding import NumpyState


class BatchMixer:
    """Mixes the images of a batch and returns its targets as probabilities, each block's side by
    side. timm draws λ from numpy's global generator; the mixer keeps a state of its own, seeded
    with `seed`, so its draws repeat and nothing outside changes."""

    def __init__(self, config: MixConfig, layout: OutputLayout, seed: int):
        self.layout = layout
        self.random = NumpyState(seed)
        self.mixup = Mixup(mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha, prob=config.mix_prob,
                           switch_prob=config.mix_switch_prob, mode="batch", label_smoothing=0.0,
                           num_classes=layout.num_joint)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        joint = self.layout.joint(targets)
        even = len(images) - len(images) % 2  # timm mixes pairs; an odd last row stays itself
        soft = torch.nn.functional.one_hot(joint, self.layout.num_joint).float()
        if even:
            with self.random.active():
                _, soft[:even] = self.mixup(images[:even], joint[:even])
        return images, self.layout.marginals(soft)


def build_mixer(config: MixConfig, layout: OutputLayout, seed: int) -> BatchMixer | None:
    """A mixer when mixup or CutMix is on, else None."""
    if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
        return BatchMixer(config, layout, seed)
    return None
