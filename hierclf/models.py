"""timm backbones: building them from a recipe stage, local weight files, saving and loading.

A `ModelSpec` (model.json) holds everything needed to rebuild a trained model without the
recipe: architecture, outputs, input size and normalisation. A model with attribute heads
(mask, gender, age) returns every head's logits side by side, in head order, so training,
validation and prediction handle it as one output split into softmax blocks.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

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
    heads: tuple[tuple[str, int], ...] = ()
    """(name, size) of each attribute head; empty for one softmax over class_names."""
    separate: bool = False
    """heads: one backbone per head instead of a shared one."""

    @property
    def head_sizes(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.heads)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, payload: dict, source: str) -> "ModelSpec":
        try:
            return cls(arch=payload["arch"], num_classes=int(payload["num_classes"]),
                       in_chans=int(payload["in_chans"]), img_size=int(payload["img_size"]),
                       mean=tuple(payload["mean"]), std=tuple(payload["std"]),
                       drop_rate=float(payload["drop_rate"]), class_names=tuple(payload["class_names"]),
                       heads=tuple((str(name), int(size)) for name, size in payload.get("heads", ())),
                       separate=bool(payload.get("separate", False)))
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


class MultiHeadModel(torch.nn.Module):
    """One timm backbone (pooled features, dropout) and a linear classifier per attribute head.
    The attributes share what the backbone learns, at the cost of one model's compute."""

    def __init__(self, backbone: torch.nn.Module, heads: Sequence[tuple[str, int]]):
        super().__init__()
        self.backbone = backbone
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(width, size) for name, size in heads})

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone(images)
        return torch.cat([head(features) for head in self.heads.values()], dim=1)


class SeparateHeads(torch.nn.Module):
    """One whole timm model per attribute head, as the users trained them side by side; the same
    interface as MultiHeadModel, so one training loop serves both."""

    def __init__(self, models: dict[str, torch.nn.Module]):
        super().__init__()
        self.models = torch.nn.ModuleDict(models)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(images) for model in self.models.values()], dim=1)


def classifier_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers that map features to classes: a timm model's classifier, every head of a
    MultiHeadModel, the classifier of each of SeparateHeads' models. The rest is the backbone."""
    if isinstance(model, MultiHeadModel):
        return list(model.heads.values())
    if isinstance(model, SeparateHeads):
        return [part for inner in model.models.values() for part in classifier_modules(inner)]
    return [model.get_classifier()]


def set_backbone_frozen(model: torch.nn.Module, frozen: bool) -> None:
    """Stop (or restart) training everything but the classifier. Frozen, the backbone gets no
    gradient and its normalisation layers keep their running statistics (eval mode); call it
    after `model.train()`."""
    head_ids = {id(p) for module in classifier_modules(model) for p in module.parameters()}
    head_modules = {id(m) for module in classifier_modules(model) for m in module.modules()}
    for parameter in model.parameters():
        if id(parameter) not in head_ids:
            parameter.requires_grad_(not frozen)
    if frozen:
        for module in model.modules():
            if id(module) not in head_modules and isinstance(module, torch.nn.modules.batchnorm._NormBase):
                module.eval()


def create_model(stage: StageConfig, class_names: tuple[str, ...], key: str = "coarse",
                 heads: Sequence[tuple[str, int]] = (), separate: bool = False) -> tuple[torch.nn.Module, ModelSpec]:
    """A timm model for a stage: from scratch, timm's pretrained weights, or a local file. With
    `heads` (name, size), one output block per attribute: a head each on a shared backbone, or
    with `separate` one model each; `class_names` then names the blocks' outputs."""
    check_arch(stage.model, f"{key}.model")
    model = _assemble(lambda num_classes: _timm_model(stage, num_classes, key), len(class_names), heads, separate)
    first = model if not heads else next(iter(model.models.values())) if separate else model.backbone
    data_config = resolve_model_data_config(first)
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    if stage.in_chans == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    spec = ModelSpec(arch=stage.model, num_classes=len(class_names), in_chans=stage.in_chans,
                     img_size=stage.img_size, mean=mean, std=std, drop_rate=stage.drop_rate,
                     class_names=tuple(class_names), heads=tuple((name, int(size)) for name, size in heads),
                     separate=bool(heads) and separate)
    return model, spec


def _timm_model(stage: StageConfig, num_classes: int, key: str) -> torch.nn.Module:
    """One timm model; num_classes 0 returns pooled features (a backbone for heads of our own)."""
    try:
        model = timm.create_model(stage.model, pretrained=stage.pretrained, num_classes=num_classes,
                                  in_chans=stage.in_chans, drop_rate=stage.drop_rate,
                                  **_size_kwargs(stage.model, stage.img_size))
    except Exception as error:  # timm and the hub raise many kinds; all mean "could not build it"
        if stage.pretrained:
            raise HierclfError(f"{key}.pretrained: could not fetch weights for {stage.model!r} ({error}); "
                               f"without network use {key}.weights = 'file.safetensors'") from None
        raise HierclfError(f"{key}.model = {stage.model!r}: timm could not build it ({error})") from None
    if stage.weights:
        load_weights_file(model, Path(stage.weights), f"{key}.weights")
    return model


def _assemble(timm_model: Callable[[int], torch.nn.Module], num_classes: int,
              heads: Sequence[tuple[str, int]], separate: bool) -> torch.nn.Module:
    """One timm model over the classes; or per attribute head a linear head on one backbone, or
    with `separate` a model each. `timm_model(n)` builds a timm model with n outputs (0: features)."""
    if not heads:
        return timm_model(num_classes)
    if separate:
        return SeparateHeads({name: timm_model(size) for name, size in heads})
    return MultiHeadModel(timm_model(0), heads)


def model_from_spec(spec: ModelSpec) -> torch.nn.Module:
    return _assemble(lambda num_classes: timm.create_model(
        spec.arch, pretrained=False, num_classes=num_classes, in_chans=spec.in_chans, drop_rate=spec.drop_rate,
        **_size_kwargs(spec.arch, spec.img_size)), spec.num_classes, spec.heads, spec.separate)


def load_weights_file(model: torch.nn.Module, path: Path, key: str, new_head: bool = False,
                      prefix: str = "") -> None:
    """Start from a local .safetensors or .pth file, read without unpickling arbitrary objects.
    Tensors whose shape differs (a classifier for another number of classes) are left out, and
    with `new_head` the classifier always is. With `prefix`, only the file's tensors under it
    are read, without it (a multi-head model's `backbone.`)."""
    if not path.is_file():
        raise RecipeError(f"{key} = '{path}': no such file")
    try:
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as error:  # torch.load / safetensors raise several kinds for a bad file
        raise RecipeError(f"{key} = '{path}': cannot read weights ({error})") from None
    if prefix:
        state = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
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
