"""Starting weights from a local file (.safetensors, or .pth read without unpickling arbitrary
objects): what fits the model is loaded, a classifier of another size is left out, and a
specialist may start from the rows of a flat model's classifier that are its group's."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import timm
import torch

from hierclf.data.bounded import checked_input
from hierclf.errors import DataError, RecipeError
from hierclf.run.files import check_finite

log = logging.getLogger(__name__)


def load_weights_file(model: torch.nn.Module, path: Path, key: str, new_head: bool = False,
                      prefix: str = "", head_rows: Sequence[int] = ()) -> None:
    """Start from a local .safetensors or .pth file, read without unpickling arbitrary objects.
    Tensors whose shape differs (a classifier for another number of classes) are left out, and
    with `new_head` the classifier always is, unless `head_rows` picks the rows of the file's
    classifier that become the new one's (a specialist starting as the flat model restricted to
    its group). With `prefix`, only the file's tensors under it are read, without it (a
    multi-head model's `backbone.`). The first convolution of weights for another number of
    input channels is adapted as timm adapts its pretrained ones (RGB summed for greyscale), so
    grey images start from RGB weights with their stem intact."""
    try:
        checked_input(path, "weights file")
    except DataError as error:
        raise RecipeError(f"{key} = '{path}': {error}") from None
    own = model.state_dict()
    check_weights_size(path, own, type(model).__name__, f"{key} = '{path}'")
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except MemoryError:
        raise RecipeError(f"{key} = '{path}': not enough memory to read it") from None
    except Exception as error:  # torch.load / safetensors raise several kinds for a bad file
        raise RecipeError(f"{key} = '{path}': cannot read weights ({error})") from None
    check_finite(state, f"{key} = '{path}'")
    if prefix:
        state = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    state = _adapted_input(model, state, own)
    head = f"{model.pretrained_cfg.get('classifier', '')}." if new_head and hasattr(model, "pretrained_cfg") else None
    fitting = {name: tensor for name, tensor in state.items()
               if name in own and own[name].shape == tensor.shape and not (head and name.startswith(head))}
    if head and head_rows:
        rows = list(head_rows)
        for name, tensor in state.items():
            if name.startswith(head) and name in own and len(tensor) > max(rows) and \
                    tensor[rows].shape == own[name].shape:
                fitting[name] = tensor[rows]
    if not fitting:
        raise RecipeError(f"{key} = '{path}': no tensor in it fits {type(model).__name__}; "
                          f"is it weights for another architecture?")
    skipped = sorted(set(state) - set(fitting))
    result = model.load_state_dict(fitting, strict=False)
    log.info("loaded %d tensors from %s%s", len(fitting), path,
             f"; left out {len(skipped)} that do not fit: {', '.join(skipped[:4])}" if skipped else "")
    if result.missing_keys:
        log.info("not in the file, trained from scratch: %s", ", ".join(result.missing_keys[:6]))


CHECKPOINT_COPIES, CHECKPOINT_SLACK = 5, 64 * 2**20
"""A checkpoint of a model holds its weights, perhaps an optimiser's state (Adam: two more
copies) and an average of them (EMA): at most 5 copies, plus room for the rest it saves."""


def check_weights_size(path: Path, own: dict[str, torch.Tensor], model: str, where: str) -> None:
    """Refuse, before reading it, a file larger than any checkpoint of `model` (whose state dict is
    `own`) can be: a 5 GB file would be read into memory whole, to end in a MemoryError."""
    weights = sum(tensor.numel() * tensor.element_size() for tensor in own.values())
    limit = CHECKPOINT_COPIES * weights + CHECKPOINT_SLACK
    size = Path(path).stat().st_size
    if size > limit:
        raise RecipeError(f"{where}: it holds {size / 2**20:,.0f} MB, more than a checkpoint of {model} can "
                          f"({limit / 2**20:,.0f} MB: {CHECKPOINT_COPIES}× its {weights / 2**20:,.1f} MB of weights, "
                          f"and room for the rest); is it the right file?")


def _adapted_input(model: torch.nn.Module, state: dict[str, torch.Tensor],
                   own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with its first convolution's weight adapted to the model's input channels, when it
    is the same convolution for another number of them."""
    first = getattr(model, "pretrained_cfg", {}).get("first_conv")
    name = f"{first}.weight" if isinstance(first, str) else None
    if name not in state or name not in own or state[name].shape == own[name].shape:
        return state
    theirs, mine = state[name].shape, own[name].shape
    if len(theirs) != 4 or (theirs[0],) + tuple(theirs[2:]) != (mine[0],) + tuple(mine[2:]):
        return state
    adapted = timm.models.adapt_input_conv(mine[1], state[name].float()).to(state[name].dtype)
    log.info("%s: the file's %d input channels adapted to %d", name, theirs[1], mine[1])
    return {**state, name: adapted}
