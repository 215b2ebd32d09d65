"""Weights of another port of an architecture (efficientnet_pytorch, torchvision, a notebook's own
model class) converted to a timm model's names, so a checkpoint found offline starts a stage as
timm's own pretrained weights would: `hierclf import-weights SRC --model NAME --out W.safetensors`,
then `weights = "W.safetensors"`.

The names are matched by known renaming rules where they hold (the same names, or the prefixes
DataParallel and training scripts add); otherwise by order, as ports write their layers in the
same order, every shape checked. The first tensor that does not fit is named, and nothing is
written. The file is read without unpickling anything but tensors (`torch.load(weights_only=True)`).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from hierclf.data.bounded import checked_input
from hierclf.errors import DataError, RecipeError
from hierclf.models.weights import check_weights_size

WRAPPERS = ("module.", "model.", "net.", "backbone.")
"""Prefixes that wrap a model's own names: DataParallel's, and training scripts' attribute names."""

NESTED = ("state_dict", "model", "model_state_dict", "net", "weights")
"""Keys under which checkpoints keep the state dict itself."""

COUNTERS = "num_batches_tracked"
"""BatchNorm's step counter: in some ports, not in others, and nothing a model learns."""


@dataclass(frozen=True)
class Converted:
    """The tensors under the target model's names, and how the names were matched."""

    tensors: dict[str, torch.Tensor]
    by: str
    left_out: tuple[str, ...] = ()
    """The target's classifier tensors, when the checkpoint's classifier is for another number
    of classes: a recipe's stage trains a new head anyway."""


def read_checkpoint(path: Path, option: str = "SRC") -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors file, or of a PyTorch checkpoint read with weights_only (a state
    dict, or one nested under state_dict/model/…); anything else is refused naming the file."""
    try:
        checked_input(path, "weights file")
    except DataError as error:
        raise RecipeError(f"{option}: {error}") from None
    try:
        loaded = load_file(str(path)) if path.suffix == ".safetensors" else \
            torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RecipeError(f"{option} {path}: cannot read it as weights: it holds objects other than tensors, "
                          f"and nothing else is unpickled") from None
    except MemoryError:
        raise RecipeError(f"{option} {path}: not enough memory to read it") from None
    except (OSError, RuntimeError, SafetensorError, ValueError, EOFError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RecipeError(f"{option} {path}: cannot read it as weights ({first})") from None
    for key in NESTED:
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not loaded:
        raise RecipeError(f"{option} {path}: holds no state dict (name → tensor)")
    tensors = {str(name): value for name, value in loaded.items() if torch.is_tensor(value)}
    if not tensors:
        raise RecipeError(f"{option} {path}: holds no tensors")
    return tensors


def convert(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], model: str,
            where: str = "SRC", head: str = "") -> Converted:
    """`source`'s tensors under `target`'s names (a timm model's state dict): by name where the
    names match once wrapping prefixes are stripped, else by order, each shape checked. Tensors
    under `head` (the classifier's prefix) that do not fit are left out, not refused: the same
    architecture trained for another number of classes."""
    renamed = _strip_wrappers(source)
    wanted = {name: tensor for name, tensor in target.items() if not name.endswith(COUNTERS)}
    misfits = [name for name, tensor in wanted.items() if name not in renamed or renamed[name].shape != tensor.shape]
    if all(head and name.startswith(head) for name in misfits):
        return Converted({name: renamed[name] for name in target if name in renamed and name not in misfits},
                         "by name", tuple(misfits))
    learned = [(name, tensor) for name, tensor in source.items() if not name.endswith(COUNTERS)]
    if len(learned) != len(wanted):
        raise RecipeError(f"{where}: {len(learned)} tensors (BatchNorm counters aside), but {model} has "
                          f"{len(wanted)}: it is not a port of {model}")
    converted, left_out = {}, []
    for (name, tensor), (own, shape) in zip(learned, ((own, t.shape) for own, t in wanted.items())):
        if tensor.shape == shape:
            converted[own] = tensor
        elif head and own.startswith(head):
            left_out.append(own)
        else:
            raise RecipeError(f"{where}: tensor {name!r} {tuple(tensor.shape)} does not fit {model}'s {own!r} "
                              f"{tuple(shape)}, at the same place in order; it is not a port of {model}")
    return Converted(converted, "by order", tuple(left_out))


def convert_checkpoint(path: Path, model: str) -> Converted:
    """The checkpoint at `path` under the names of timm's `model` (built from scratch, only for
    its names and shapes), refused by size before it is read."""
    import timm

    built = timm.create_model(model, pretrained=False)
    target = built.state_dict()
    if path.is_file():
        check_weights_size(path, target, model, f"SRC {path}")
    source = read_checkpoint(path)
    classifier = built.pretrained_cfg.get("classifier")
    return convert(source, target, model, f"SRC {path}", f"{classifier}." if isinstance(classifier, str) else "")


def _strip_wrappers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The names without a prefix every one of them shares (module., model., …), repeatedly."""
    names = dict(tensors)
    while True:
        prefix = next((p for p in WRAPPERS if all(name.startswith(p) for name in names)), None)
        if prefix is None:
            return names
        names = {name[len(prefix):]: tensor for name, tensor in names.items()}
