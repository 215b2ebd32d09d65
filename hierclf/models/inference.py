"""Running trained models over a loader: one model in validation, a soft vote of folds at predict."""
from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from hierclf.hierarchy.layout import OutputLayout
from hierclf.data.tta import View


def memory_layout(channels_last: bool) -> torch.memory_format:
    """The layout a stage trains and predicts in: channels_last where its recipe asks (faster
    convolutions on recent GPUs), else torch's default."""
    return torch.channels_last if channels_last else torch.contiguous_format


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only: bf16 where the card has it, else fp16."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def vote(models: Sequence[torch.nn.Module], images: torch.Tensor, layout: OutputLayout,
         tta: Sequence[View] = ()) -> torch.Tensor:
    """One batch's mean softmax (each block's, by `layout`) over `models` and the batch's views
    (the batch itself, then each of `tta`), all weighing alike: what `soft_vote` computes per
    batch and the exported graph per stage."""
    total = None
    for view in [images, *(transform(images) for transform in tta)]:
        for model in models:
            probs = layout.softmax(model(view))
            total = probs if total is None else total + probs
    return total / (len(models) * (1 + len(tta)))


@torch.inference_mode()
def soft_vote(models: Sequence[torch.nn.Module], loader: DataLoader, device: torch.device, layout: OutputLayout,
              amp: bool = True, tta: Sequence[View] = (),
              memory_format: torch.memory_format = torch.contiguous_format) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax probability of `models` (each block's, by `layout`) for every row of `loader`,
    and each row's index. Each batch is decoded once, moved in the models' `memory_format`, and
    passed through every model; with `tta`, also every view of it, all views weighing alike."""
    for model in models:
        model.eval()
    probs, rows = [], []
    for images, _, row in loader:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        with autocast(device, amp):
            voted = vote(models, images, layout, tta)
        probs.append(voted.cpu().numpy())
        rows.append(row.numpy())
    if not probs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs).astype(np.float32), np.concatenate(rows)

