"""Running trained models over a loader: one model in validation, a soft vote of folds at predict."""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only: bf16 where the card has it, else fp16."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def probabilities(logits: torch.Tensor, head_sizes: Sequence[int] = ()) -> torch.Tensor:
    """Softmax over the classes, or with `head_sizes` over each attribute head's block of logits."""
    logits = logits.float()
    if not head_sizes:
        return torch.softmax(logits, dim=1)
    return torch.cat([torch.softmax(block, dim=1) for block in logits.split(tuple(head_sizes), dim=1)], dim=1)


TTAVariant = tuple[str, float]
"""A test-time view: (hflip | vflip | rot90 | rot180 | rot270, 1.0) or ("scale", factor)."""


def tta_view(images: torch.Tensor, variant: TTAVariant) -> torch.Tensor:
    """One view of a normalised N×C×H×W batch. A scale zooms about the centre and keeps the
    size: above 1 it crops in, below 1 it pads out with zeros (the mean colour, once normalised)."""
    kind, factor = variant
    if kind == "hflip":
        return images.flip(3)
    if kind == "vflip":
        return images.flip(2)
    if kind.startswith("rot"):
        return torch.rot90(images, int(kind[3:]) // 90, dims=(2, 3))
    height, width = images.shape[-2:]
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    scaled = torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                             antialias=factor < 1)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    if factor >= 1:
        return scaled[..., top:top + height, left:left + width]
    pad = (-left, width - size[1] + left, -top, height - size[0] + top)
    return torch.nn.functional.pad(scaled, pad)


@torch.inference_mode()
def soft_vote(models: Sequence[torch.nn.Module], loader: DataLoader, device: torch.device,
              amp: bool = True, head_sizes: Sequence[int] = (),
              tta: Sequence[TTAVariant] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax probability of `models` for every row of `loader` (per head with `head_sizes`),
    and each row's index. Each batch is decoded once and passed through every model; with `tta`,
    also every view of it, all views weighing alike."""
    for model in models:
        model.eval()
    probs, rows = [], []
    for images, _, row in loader:
        images = images.to(device, non_blocking=True)
        total = None
        with autocast(device, amp):
            for view in [images, *(tta_view(images, variant) for variant in tta)]:
                for model in models:
                    p = probabilities(model(view), head_sizes)
                    total = p if total is None else total + p
        probs.append((total / (len(models) * (1 + len(tta)))).cpu().numpy())
        rows.append(row.numpy())
    if not probs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs).astype(np.float32), np.concatenate(rows)
