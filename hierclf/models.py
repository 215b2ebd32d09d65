"""timm backbones: building them from a recipe stage, local weight files, saving and loading.

A `ModelSpec` (model.json) holds everything needed to rebuild a trained model without the
recipe: architecture, outputs, input size and normalisation.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from timm.data import resolve_model_data_config

from hierclf.errors import HierclfError, RecipeError, RunError
from hierclf.recipe import StageConfig
from hierclf.runs import load_weights, read_json, save_weights, write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    num_classes: int
    in_chans: int
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    drop_rate: float
    class_names: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, payload: dict, source: str) -> "ModelSpec":
        try:
            return cls(arch=payload["arch"], num_classes=int(payload["num_classes"]),
                       in_chans=int(payload["in_chans"]), img_size=int(payload["img_size"]),
                       mean=tuple(payload["mean"]), std=tuple(payload["std"]),
                       drop_rate=float(payload["drop_rate"]), class_names=tuple(payload["class_names"]))
        except (KeyError, TypeError, ValueError) as error:
            raise RunError(f"{source} is not a model description: {error}") from None


def check_arch(name: str, key: str) -> None:
    """Fail early, naming the recipe key, when timm has no such architecture."""
    if timm.is_model(name):
        return
    import difflib
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.7)
    hint = f" (did you mean {', '.join(close)}?)" if close else " (see timm.list_models())"
    raise RecipeError(f"{key} = {name!r}: timm has no such model{hint}")


def create_model(stage: StageConfig, class_names: tuple[str, ...], key: str = "coarse") -> tuple[torch.nn.Module, ModelSpec]:
    """A timm model for a stage: from scratch, timm's pretrained weights, or a local file."""
    check_arch(stage.model, f"{key}.model")
    kwargs = _size_kwargs(stage.model, stage.img_size)
    try:
        model = timm.create_model(stage.model, pretrained=stage.pretrained, num_classes=len(class_names),
                                  in_chans=stage.in_chans, drop_rate=stage.drop_rate, **kwargs)
    except Exception as error:  # timm and the hub raise many kinds; all mean "could not build it"
        if stage.pretrained:
            raise HierclfError(f"{key}.pretrained: could not fetch weights for {stage.model!r} ({error}); "
                               f"without network use {key}.weights = 'file.safetensors'") from None
        raise HierclfError(f"{key}.model = {stage.model!r}: timm could not build it ({error})") from None
    if stage.weights:
        load_weights_file(model, Path(stage.weights), f"{key}.weights")
    data_config = resolve_model_data_config(model)
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    if stage.in_chans == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    spec = ModelSpec(arch=stage.model, num_classes=len(class_names), in_chans=stage.in_chans,
                     img_size=stage.img_size, mean=mean, std=std, drop_rate=stage.drop_rate,
                     class_names=tuple(class_names))
    return model, spec


def model_from_spec(spec: ModelSpec) -> torch.nn.Module:
    return timm.create_model(spec.arch, pretrained=False, num_classes=spec.num_classes,
                             in_chans=spec.in_chans, drop_rate=spec.drop_rate,
                             **_size_kwargs(spec.arch, spec.img_size))


def load_weights_file(model: torch.nn.Module, path: Path, key: str, new_head: bool = False) -> None:
    """Start from a local .safetensors or .pth file, read without unpickling arbitrary objects.
    Tensors whose shape differs (a classifier for another number of classes) are left out, and
    with `new_head` the classifier always is."""
    if not path.is_file():
        raise RecipeError(f"{key} = '{path}': no such file")
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch.load / safetensors raise several kinds for a bad file
        raise RecipeError(f"{key} = '{path}': cannot read weights ({error})") from None
    own = model.state_dict()
    head = f"{model.pretrained_cfg.get('classifier', '')}." if new_head and hasattr(model, "pretrained_cfg") else None
    fitting = {name: tensor for name, tensor in state.items()
               if name in own and own[name].shape == tensor.shape and not (head and name.startswith(head))}
    if not fitting:
        raise RecipeError(f"{key} = '{path}': no tensor in it fits {type(model).__name__}; "
                          f"is it weights for another architecture?")
    skipped = sorted(set(state) - set(fitting))
    result = model.load_state_dict(fitting, strict=False)
    log.info("loaded %d tensors from %s%s", len(fitting), path,
             f"; left out {len(skipped)} that do not fit: {', '.join(skipped[:4])}" if skipped else "")
    if result.missing_keys:
        log.info("not in the file, trained from scratch: %s", ", ".join(result.missing_keys[:6]))


def save_model(folder: Path, model: torch.nn.Module, spec: ModelSpec,
               state_dict: dict[str, torch.Tensor] | None = None) -> None:
    save_weights(folder / "weights.safetensors", state_dict if state_dict is not None else model.state_dict())
    write_text(folder / "model.json", spec.to_json())


def load_model(folder: Path, device: torch.device) -> tuple[torch.nn.Module, ModelSpec]:
    spec = ModelSpec.from_dict(read_json(folder / "model.json"), str(folder / "model.json"))
    model = model_from_spec(spec)
    try:
        model.load_state_dict(load_weights(folder / "weights.safetensors"))
    except RuntimeError as error:
        raise RunError(f"{folder}/weights.safetensors does not fit its model.json: {error}") from None
    return model.to(device).eval(), spec


def _size_kwargs(arch: str, img_size: int) -> dict:
    """Models with a fixed input size (ViTs) must be told the size; CNNs take any."""
    config = timm.models.get_pretrained_cfg(arch)
    return {"img_size": img_size} if config is not None and config.fixed_input_size else {}
