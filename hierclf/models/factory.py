"""timm models for a stage: built from its model keys and output layout (new, pretrained, or from
a local weights file), or rebuilt from a trained model's spec.

Whatever its layout, a model returns one row of logits per image, its blocks side by side: a
plain timm model for one block, a head per block on a shared backbone, or one timm model per
block (`separate`). What counts as the classifier (for freezing, and the backbone's learning
rate) is decided here, and a new classifier on loaded weights starts at zero (`zero_head`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import timm
import torch
from timm.data import resolve_model_data_config
from timm.models import group_parameters

from hierclf.errors import HierclfError, RecipeError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.spec import ModelSpec
from hierclf.models.weights import load_weights_file
from hierclf.recipe.finetuning import starts_trained
from hierclf.recipe.schema import ModelConfig
from hierclf.seeding import torch_seeded


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

    def __init__(self, backbone: torch.nn.Module, heads: Sequence[tuple[str, int]], zero: bool = False):
        """`zero`: the heads start at zero (`zero_head`), as on a backbone with loaded weights."""
        super().__init__()
        self.backbone = backbone
        width = getattr(backbone, "head_hidden_size", None) or backbone.num_features
        self.heads = torch.nn.ModuleDict({name: torch.nn.Linear(width, size) for name, size in heads})
        for head in self.heads.values() if zero else ():
            zero_head(head)

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


def zero_head(classifier: torch.nn.Module) -> None:
    """Start a new classifier at zero, as BiT does for fine-tuning: every class equally likely, the
    first loss ln C. timm sizes a classifier's init for its 1,000 ImageNet classes (EfficientNet's
    range is 1/√classes), so over pretrained features a head for a few classes starts with logits
    of standard deviation 3 to 16, and the first epoch's large gradients wreck the features it sits
    on. The weights still learn from the first step (their gradient is the features times the
    error); the backbone's gradient flows from the second. A model trained from scratch keeps
    timm's own init, sized for its classes and its random features (there the zero head slowed
    the first epochs of the tests' small runs)."""
    with torch.no_grad():
        for parameter in classifier.parameters():
            parameter.zero_()


def classifier_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers that map features to classes: a timm model's classifier, every head of a
    MultiHeadModel, the classifier of each of SeparateHeads' models. The rest is the backbone."""
    if isinstance(model, MultiHeadModel):
        return list(model.heads.values())
    if isinstance(model, SeparateHeads):
        return [part for inner in model.models.values() for part in classifier_modules(inner)]
    return [model.get_classifier()]


def set_backbone_frozen(model: torch.nn.Module, frozen: bool) -> None:
    """Stop (or restart) training everything but the classifier: frozen, the backbone gets no
    gradient. Its normalisation layers' mode is `hold_batchnorm`'s business, not this one's: a
    mode that changes at the unfreeze hands the head features it never saw."""
    head_ids = {id(p) for module in classifier_modules(model) for p in module.parameters()}
    for parameter in model.parameters():
        if id(parameter) not in head_ids:
            parameter.requires_grad_(not frozen)


def hold_batchnorm(model: torch.nn.Module) -> None:
    """Every batch normalisation layer in eval mode: it normalises by its running statistics, as
    loaded, and never moves them (its scale and shift still train). Call it after `model.train()`."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase):
            module.eval()


def lowest_stages(model: torch.nn.Module, count: int, key: str) -> list[torch.nn.Parameter]:
    """The parameters of the `count` lowest stages of every timm model in `model`, as timm groups
    them (its coarse parameter groups: the stem, then each stage); the classifier is never one.
    More stages than the model has below its classifier, less one, is refused naming `key`."""
    parameters = []
    for inner in _timm_models(model):
        named = dict(inner.named_parameters())
        head = {id(p) for p in inner.get_classifier().parameters()}
        groups = group_parameters(inner, inner.group_matcher(coarse=True))
        body = [names for _, names in sorted(groups.items()) if not any(id(named[n]) in head for n in names)]
        if count >= len(body):
            raise RecipeError(f"{key}.frozen_stages = {count}: {inner.default_cfg.get('architecture', 'the model')} "
                              f"has {len(body)} stages below its classifier; freeze at most {len(body) - 1}, so one "
                              f"trains")
        parameters += [named[name] for names in body[:count] for name in names]
    return parameters


def layer_scales(model: torch.nn.Module, decay: float) -> dict[int, float]:
    """Each backbone parameter's share of the learning rate under layer-wise decay (BEiT's, as
    timm's param_groups_layer_decay computes it): timm's fine parameter groups from the input up,
    the top one at 1 and each one below at `decay` times the one above. Keyed by id(parameter); the
    classifiers are not in it (they keep the full rate)."""
    heads = {id(p) for module in classifier_modules(model) for p in module.parameters()}
    scales = {}
    for inner in _timm_models(model):
        named = dict(inner.named_parameters())
        layers = {name: layer for name, layer in
                  group_parameters(inner, inner.group_matcher(coarse=False), reverse=True).items()
                  if id(named[name]) not in heads}
        top = max(layers.values())
        scales.update({id(named[name]): decay ** (top - layer) for name, layer in layers.items()})
    return scales


def set_frozen(model: torch.nn.Module, parameters: Sequence[torch.nn.Parameter], frozen: bool) -> None:
    """Stop (or restart) training `parameters`; frozen, a normalisation layer whose parameters are
    all among them keeps its running statistics (eval mode). Call it after `model.train()`."""
    chosen = {id(p) for p in parameters}
    for parameter in parameters:
        parameter.requires_grad_(not frozen)
    if frozen:
        for module in model.modules():
            own = list(module.parameters(recurse=False))
            if isinstance(module, torch.nn.modules.batchnorm._NormBase) and own and all(id(p) in chosen for p in own):
                module.eval()


def create_model(config: ModelConfig, layout: OutputLayout, key: str = "coarse", separate: bool = False,
                 seed: int = 0) -> tuple[torch.nn.Module, ModelSpec]:
    """A timm model for a stage's `layout`: from scratch (initial weights drawn from `seed`), timm's
    pretrained weights, or a local file. With several blocks, a linear head each on a shared
    backbone, or with `separate` one timm model each."""
    check_arch(config.model, f"{key}.model")
    loaded = starts_trained(config)
    with torch_seeded(seed):
        model = _assemble(lambda num_classes: _timm_model(config, num_classes, key, loaded), layout, separate,
                          zero=loaded)
    data_config = resolve_model_data_config(_first_timm_model(model))
    mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
    if config.in_chans == 1:
        mean, std = (sum(mean) / len(mean),), (sum(std) / len(std),)
    spec = ModelSpec(arch=config.model, layout=layout, in_chans=config.in_chans, img_size=config.img_size, mean=mean,
                     std=std, drop_rate=config.drop_rate, separate=separate and len(layout.blocks) > 1)
    return model, spec


def _timm_model(config: ModelConfig, num_classes: int, key: str, zero: bool = False) -> torch.nn.Module:
    """One timm model; num_classes 0 returns pooled features (a backbone for heads of our own).
    With `zero` a new classifier starts at zero (timm's own pretrained one, for as many classes,
    is kept; a weights file's that fits replaces it)."""
    try:
        model = timm.create_model(config.model, pretrained=config.pretrained, num_classes=num_classes,
                                  in_chans=config.in_chans, drop_rate=config.drop_rate,
                                  **_size_kwargs(config.model, config.img_size))
    except Exception as error:  # timm and the hub raise many kinds; all mean "could not build it"
        if config.pretrained:
            raise HierclfError(f"{key}.pretrained: could not fetch weights for {config.model!r} ({error}); "
                               f"without network use {key}.weights = 'file.safetensors'") from None
        raise HierclfError(f"{key}.model = {config.model!r}: timm could not build it ({error})") from None
    if zero and num_classes and not (config.pretrained and num_classes == model.pretrained_cfg.get("num_classes")):
        zero_head(model.get_classifier())
    if config.weights:
        load_weights_file(model, Path(config.weights), f"{key}.weights")
    return model


def _assemble(timm_model: Callable[[int], torch.nn.Module], layout: OutputLayout, separate: bool,
              zero: bool = False) -> torch.nn.Module:
    """The model of a layout. One block is a plain timm model with that many outputs, so its
    weights keep timm's names (`fc.*`) and load into any timm model of that architecture; several
    blocks get a linear head each on one backbone, or with `separate` a timm model each.
    `timm_model(n)` builds a timm model with n outputs (0: pooled features)."""
    if len(layout.blocks) == 1:
        return timm_model(layout.width)
    if separate:
        return SeparateHeads({block.name: timm_model(block.size) for block in layout.blocks})
    return MultiHeadModel(timm_model(0), [(block.name, block.size) for block in layout.blocks], zero)


def _timm_models(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every timm model of a layout's model: itself, the shared backbone, or one per head."""
    if isinstance(model, SeparateHeads):
        return list(model.models.values())
    return [model.backbone if isinstance(model, MultiHeadModel) else model]


def _first_timm_model(model: torch.nn.Module) -> torch.nn.Module:
    """The timm model whose data config (mean, std) a stage's images are normalised by."""
    return _timm_models(model)[0]


def model_from_spec(spec: ModelSpec) -> torch.nn.Module:
    return _assemble(lambda num_classes: timm.create_model(
        spec.arch, pretrained=False, num_classes=num_classes, in_chans=spec.in_chans, drop_rate=spec.drop_rate,
        **_size_kwargs(spec.arch, spec.img_size)), spec.layout, spec.separate)


def _size_kwargs(arch: str, img_size: int) -> dict:
    """Models with a fixed input size (ViTs) must be told the size; CNNs take any."""
    config = timm.models.get_pretrained_cfg(arch)
    return {"img_size": img_size} if config is not None and config.fixed_input_size else {}
