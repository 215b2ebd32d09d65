"""What a fold needs to resume after the epoch it last finished: one safetensors file, written
atomically at the end of every epoch and deleted when the fold is done.

Tensors (the model, the EMA copy, the best epoch's weights and validation outputs, the
optimiser's state tensors, torch's and the loader's generator states) are safetensors; the rest
(epoch, history, the best value, early-stopping count, updates, the optimiser's and scheduler's
numbers, the loss scaler, the mixer's and the augmentation's generator states) is one JSON
string in the file's metadata. Nothing is pickled, and a file killed mid-write never replaces
the last good one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import save_file

from hierclf.errors import RunError
from hierclf.run.files import atomic_path


@dataclass
class Checkpoint:
    """The training state after `epoch` finished epochs."""

    epoch: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under `prefix/`, without it."""
        start = f"{prefix}/"
        return {name[len(start):]: tensor for name, tensor in self.tensors.items() if name.startswith(start)}


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in checkpoint.tensors.items()}
    metadata = {"epoch": str(checkpoint.epoch), "state": json.dumps(checkpoint.state)}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def load_checkpoint(path: Path) -> Checkpoint | None:
    """The saved state, or None when the fold has none (it starts from epoch 0)."""
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as opened:
            metadata = opened.metadata() or {}
            tensors = {name: opened.get_tensor(name) for name in opened.keys()}
        return Checkpoint(epoch=int(metadata["epoch"]), tensors=tensors, state=json.loads(metadata["state"]))
    except (OSError, SafetensorError, KeyError, ValueError) as error:
        raise RunError(f"{path} cannot be read ({error}); delete it to train this fold from the start") from None


def optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The optimiser's state as tensors (per parameter: its moments) and JSON (the rest)."""
    saved = optimizer.state_dict()
    tensors, numbers = {}, {}
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                numbers.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": saved["param_groups"], "numbers": numbers}


def restore_optimizer(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint) -> None:
    entries: dict[int, dict[str, Any]] = {}
    for name, tensor in checkpoint.group("optimizer").items():
        index, key = name.split("/", 1)
        entries.setdefault(int(index), {})[key] = tensor
    for index, numbers in checkpoint.state["optimizer"]["numbers"].items():
        entries.setdefault(int(index), {}).update(numbers)
    optimizer.load_state_dict({"state": entries, "param_groups": checkpoint.state["optimizer"]["param_groups"]})


def numpy_state(state: tuple) -> list:
    """np.random.get_state() as JSON: (name, keys, pos, has_gauss, cached_gaussian)."""
    return [state[0], state[1].tolist(), *state[2:]]


def numpy_state_back(saved: list) -> tuple:
    return (saved[0], np.asarray(saved[1], dtype=np.uint32), *saved[2:])


def python_random_state(state: tuple) -> list:
    """random.Random.getstate() as JSON."""
    return [state[0], list(state[1]), state[2]]


def python_random_state_back(saved: list) -> tuple:
    return (saved[0], tuple(saved[1]), saved[2])
