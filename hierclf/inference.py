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


@torch.inference_mode()
def soft_vote(models: Sequence[torch.nn.Module], loader: DataLoader, device: torch.device,
              amp: bool = True, head_sizes: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Mean softmax probability of `models` for every row of `loader` (per head with `head_sizes`),
    and each row's index. Each batch is decoded once and passed through every model."""
    for model in models:
        model.eval()
    probs, rows = [], []
    for images, _, row in loader:
        images = images.to(device, non_blocking=True)
        total = None
        with autocast(device, amp):
            for model in models:
                p = probabilities(model(images), head_sizes)
                total = p if total is None else total + p
        probs.append((total / len(models)).cpu().numpy())
        rows.append(row.numpy())
    if not probs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs).astype(np.float32), np.concatenate(rows)
