"""Choosing where tensors live."""
from __future__ import annotations

import torch

from hierclf.errors import HierclfError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HierclfError("device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if name == "mps" and not torch.backends.mps.is_available():
        raise HierclfError("device = 'mps' but MPS is not available (use 'auto' or 'cpu')")
    return torch.device(name)
