"""Choosing where tensors live, and how many threads a process uses."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import torch

from hierclf.errors import HierclfError
from hierclf.runtime.launch import launched

log = logging.getLogger(__name__)


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


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bf16 (oneDNN's own test: AVX-512 BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str, device: torch.device) -> None:
    """bf16 training steps on a CPU only where it has bf16 units: elsewhere torch emulates them,
    slower than fp32."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise HierclfError(f'precision = "bf16": this CPU has no bf16 units (torch sees '
                           f'{torch.backends.cpu.get_cpu_capability()}, without AVX-512 BF16 or AMX); use "fp32"')


def thread_count(requested: int = 0) -> int | None:
    """The torch threads a training process should use: `requested`, or when several processes
    share the machine (torchrun's LOCAL_WORLD_SIZE, or HIERCLF_PROCESSES_PER_MACHINE) its share of
    the cores; None leaves torch's default. Processes that each take every core slow each other
    down several times over."""
    if requested:
        return requested
    sharing = launched().local_world
    if sharing <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // sharing)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `count` inside the block (said in the log), and restored."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    log.info("torch threads: %d (of %d cores)", count, os.cpu_count() or 1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
