"""What a fold needs to resume after the epoch it last finished: the `TrainingState` captured
into one safetensors file, written atomically at the end of every epoch and deleted when the
fold is done, and restored from it.

Tensors (the model, the EMA copy, the best epoch's weights and validation outputs, the
optimiser's state tensors, torch's and the loader's generator states) are safetensors; the rest
(epoch, history, the best value, early-stopping count, updates, the optimiser's and scheduler's
numbers, the loss scaler, the mixer's and the dataset's generator states) is one JSON string in
the file's metadata. Nothing is pickled, and a file killed mid-write never replaces the last
good one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from hierclf.readback import ReadBack, parse_json
from hierclf.run.files import atomic_path
from hierclf.train.state import FitResult, TrainingState


@runtime_checkable
class DrawsRandomly(Protocol):
    """A dataset whose items draw from generators of its own (augmentation), and hands their state over."""

    def random_state(self) -> list[dict[str, Any]]: ...

    def set_random_state(self, states: list[dict[str, Any]]) -> None: ...


@dataclass
class Checkpoint:
    """The training state after `epoch` finished epochs, as tensors and JSON-able values."""

    epoch: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors saved under `prefix/`, without it."""
        start = f"{prefix}/"
        return {name[len(start):]: tensor for name, tensor in self.tensors.items() if name.startswith(start)}


def capture(training: TrainingState, epochs_done: int) -> Checkpoint:
    """Everything the next epoch depends on, after `epochs_done` epochs."""
    best = training.best
    tensors = {f"model/{key}": value for key, value in training.model.state_dict().items()}
    tensors.update({f"best/{key}": value for key, value in best.best_state.items()})
    tensors.update(best_val_probs=torch.from_numpy(np.ascontiguousarray(best.val_probs)),
                   best_val_rows=torch.from_numpy(np.ascontiguousarray(best.val_rows)))
    if training.ema is not None:
        tensors.update({f"ema/{key}": value for key, value in training.ema.module.state_dict().items()})
    optimizer_tensors, optimizer_numbers = _optimizer_parts(training.optimizer)
    tensors.update(optimizer_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{index}": state for index, state in enumerate(torch.cuda.get_rng_state_all())})
    if training.loader.generator is not None:
        tensors["rng/loader"] = training.loader.generator.get_state()
    dataset = training.loader.dataset
    state = {"history": training.history, "start": training.start, "best_epoch": best.best_epoch,
             "best_value": best.best_value,
             "epochs_without_gain": training.epochs_without_gain, "updates": training.updates,
             "optimizer": optimizer_numbers,
             "scheduler": training.scheduler.state_dict() if training.scheduler is not None else None,
             "scaler": training.scaler.state_dict() if training.scaler.is_enabled() else None,
             "mixer": _numpy_state(training.mixer.random.get_state()) if training.mixer is not None else None,
             "augmentation": dataset.random_state() if isinstance(dataset, DrawsRandomly) else []}
    return Checkpoint(epoch=epochs_done, tensors=tensors, state=state)


def restore(training: TrainingState, saved: Checkpoint, source: str, own_draws: bool = True) -> None:
    """Put every piece of `training` back as it was after `saved.epoch` epochs. Without
    `own_draws` (a process other than rank 0, which saved the file) the augmentation, mixup and
    dropout generators keep their fresh seeds: rank 0's would make every process draw alike.
    Pieces that do not fit (tensors of another shape, a damaged generator state) are refused
    naming `source`, the file."""
    try:
        _restore(training, saved, own_draws)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        ReadBack(source, "delete it to train this fold from the start").fail(
            f"it does not fit this fold's model or training ({first[:200]})")


def _restore(training: TrainingState, saved: Checkpoint, own_draws: bool) -> None:
    state = saved.state
    training.model.load_state_dict(saved.group("model"))
    if training.ema is not None:
        training.ema.module.load_state_dict(saved.group("ema"))
    _restore_optimizer(training.optimizer, saved)
    if training.scheduler is not None and state["scheduler"] is not None:
        training.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] is not None:
        training.scaler.load_state_dict(state["scaler"])
    if own_draws:
        _restore_draws(training, saved)
    if training.loader.generator is not None and "rng/loader" in saved.tensors:
        training.loader.generator.set_state(saved.tensors["rng/loader"])
    training.best = FitResult(best_epoch=state["best_epoch"], best_value=state["best_value"],
                              best_state=saved.group("best"), val_probs=saved.tensors["best_val_probs"].numpy(),
                              val_rows=saved.tensors["best_val_rows"].numpy())
    training.epochs_without_gain, training.updates = state["epochs_without_gain"], state["updates"]
    training.history, training.start = state["history"], state.get("start")


def _restore_draws(training: TrainingState, saved: Checkpoint) -> None:
    """The generators of augmentation, mixup and dropout as they were after `saved.epoch` epochs."""
    state = saved.state
    if training.mixer is not None and state["mixer"] is not None:
        training.mixer.random.set_state(_numpy_state_back(state["mixer"]))
    if isinstance(training.loader.dataset, DrawsRandomly):
        training.loader.dataset.set_random_state(state["augmentation"])
    torch.set_rng_state(saved.tensors["rng/torch"])
    cuda = saved.group("rng/cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda[str(index)] for index in range(len(cuda))])


def save_checkpoint(path: Path, checkpoint: Checkpoint, made_for: str = "") -> None:
    """Write `checkpoint`; `made_for` says which fit it belongs to (`load_checkpoint` checks it)."""
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in checkpoint.tensors.items()}
    metadata = {"epoch": str(checkpoint.epoch), "state": json.dumps(checkpoint.state), "made_for": made_for}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def load_checkpoint(path: Path, made_for: str = "", epochs: int | None = None) -> Checkpoint | None:
    """The saved state, or None when the fold has none (it starts from epoch 0); refused when it
    was saved by another fit than `made_for` (a resume file copied from another run, or saved
    with other training keys), or when its numbers do not hold together."""
    if not path.exists():
        return None
    check = ReadBack(str(path), "delete it to train this fold from the start")
    try:
        with safe_open(str(path), framework="pt") as opened:
            metadata = opened.metadata() or {}
            tensors = {name: opened.get_tensor(name) for name in opened.keys()}
        state = parse_json(metadata.get("state", "null"))
    except (OSError, SafetensorError, ValueError) as error:
        check.fail(f"cannot be read ({error})")
    if metadata.get("made_for", "") != made_for:
        check.fail("it was saved by another run, fold or training keys")
    epoch = check.number(int(metadata["epoch"]) if metadata.get("epoch", "").isdigit() else metadata.get("epoch"),
                         "epoch", whole=True, lo=1, hi=epochs)
    history = check.field(state, "history", "state")
    if not isinstance(history, list) or len(history) != epoch:
        check.fail(f"its history does not hold one entry per epoch done ({epoch})")
    for index, entry in enumerate(history):
        check.number(check.field(entry, "seconds", f"history[{index}]"), f"history[{index}].seconds", lo=0)
    return Checkpoint(epoch=epoch, tensors=tensors, state=state)


def _optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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


def _restore_optimizer(optimizer: torch.optim.Optimizer, checkpoint: Checkpoint) -> None:
    entries: dict[int, dict[str, Any]] = {}
    for name, tensor in checkpoint.group("optimizer").items():
        index, key = name.split("/", 1)
        entries.setdefault(int(index), {})[key] = tensor
    for index, numbers in checkpoint.state["optimizer"]["numbers"].items():
        entries.setdefault(int(index), {}).update(numbers)
    optimizer.load_state_dict({"state": entries, "param_groups": checkpoint.state["optimizer"]["param_groups"]})


def _numpy_state(state: tuple) -> list:
    """np.random.get_state() as JSON: (name, keys, pos, has_gauss, cached_gaussian)."""
    return [state[0], state[1].tolist(), *state[2:]]


def _numpy_state_back(saved: list) -> tuple:
    return (saved[0], np.asarray(saved[1], dtype=np.uint32), *saved[2:])
