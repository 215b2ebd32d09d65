"""The rules that tie a recipe's keys together, checked once the whole recipe is built: what a
single key's type and bounds cannot say (two data sources at once, a schedule whose floor is
above its peak, an augmentation list albumentations refuses, heads that never learn)."""
from __future__ import annotations

import math

from hierclf.data.augment import check_augment_list
from hierclf.data.labels import Attribute, joint_class_names
from hierclf.data.tta import parse_view
from hierclf.errors import RecipeError
from hierclf.recipe.coerce import show_value
from hierclf.recipe.finetuning import AUTO, RATE_LADDERS
from hierclf.recipe.schema import Recipe


def check_recipe(recipe: Recipe, source: str) -> None:
    """Every rule in turn; the first one broken raises a RecipeError naming `source` and the keys."""
    _check_data(recipe, source)
    _check_heads(recipe, source)
    _check_stages(recipe, source)
    for text in recipe.predict.tta:
        parse_view(text, f"{source}: predict.tta")
    if recipe.hierarchy.group_names and len(recipe.hierarchy.group_names) != len(recipe.hierarchy.groups):
        raise RecipeError(f"{source}: hierarchy.group_names has {len(recipe.hierarchy.group_names)} names "
                          f"for {len(recipe.hierarchy.groups)} groups")


def _check_data(recipe: Recipe, source: str) -> None:
    data = recipe.data
    sources = [key for key in ("csv", "folder", "mask_images", "pattern") if getattr(data, key)]
    if len(sources) > 1:
        raise RecipeError(f"{source}: data.{sources[0]} and data.{sources[1]} are both set; choose one")
    if data.images and not (data.csv or data.pattern):
        raise RecipeError(f"{source}: data.images only applies with data.csv or data.pattern")
    if data.pattern and not data.images:
        raise RecipeError(f"{source}: data.pattern labels the images under data.images; set it")
    if (data.pattern_values or data.pattern_bins or data.pattern_unmatched != "error") and not data.pattern:
        raise RecipeError(f"{source}: data.pattern_values, pattern_bins and pattern_unmatched apply to data.pattern, "
                          f"which is not set")
    for name, bounds in data.pattern_bins.items():
        if not all(math.isfinite(bound) for bound in bounds):
            raise RecipeError(f"{source}: data.pattern_bins.{name} = {show_value(bounds)}: every bound must be a "
                              f"finite number (not nan or inf), as [30, 60]")
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise RecipeError(f"{source}: data.pattern_bins.{name} = {show_value(bounds)}: expected increasing bounds "
                              f"(each bin's start), as [30, 60]")
        if name in data.pattern_values:
            raise RecipeError(f"{source}: data.pattern {name!r} has both pattern_values and pattern_bins; a group's "
                              f"text is either mapped or binned")
    if list(data.age_bounds) != sorted(set(data.age_bounds)) or any(bound <= 0 for bound in data.age_bounds):
        raise RecipeError(f"{source}: data.age_bounds = {show_value(data.age_bounds)}: expected increasing "
                          f"positive ages")


def _check_stages(recipe: Recipe, source: str) -> None:
    stages = [("coarse", recipe.coarse), ("fine", recipe.fine)]
    stages += [(f"fine.{name}", stage) for name, stage in recipe.specialists]
    if recipe.coarse.init_from_coarse:
        raise RecipeError(f"{source}: coarse.init_from_coarse applies to specialists ([fine]) only")
    for name, stage in stages:
        if stage.pretrained and stage.weights:
            raise RecipeError(f"{source}: {name}.pretrained and {name}.weights are both set; choose one")
        lowest = min(RATE_LADDERS["sgd" if stage.optimizer == "sgd" else "adam"]) if stage.lr == AUTO else stage.lr
        if stage.scheduler in ("cosine", "cosine_restarts", "plateau") and stage.min_lr >= lowest:
            shown = (f"{name}.lr = {stage.lr:g}" if stage.lr != AUTO
                     else f"the lowest rate lr = \"auto\" tries ({lowest:g})")
            raise RecipeError(f"{source}: {name}.min_lr = {stage.min_lr:g} is not below {shown}; "
                              f"the {stage.scheduler} schedule would raise the rate instead of lowering it")
        if stage.init_from_coarse and stage.weights:
            raise RecipeError(f"{source}: {name}.init_from_coarse and {name}.weights are both set; choose one")
        if stage.init_from_coarse and (stage.model, stage.in_chans) != (recipe.coarse.model, recipe.coarse.in_chans):
            raise RecipeError(f"{source}: {name}.init_from_coarse needs the coarse stage's model and in_chans "
                              f"({recipe.coarse.model!r}, {recipe.coarse.in_chans}), got ({stage.model!r}, "
                              f"{stage.in_chans})")
        for key, value, default in (("batchnorm", stage.batchnorm, "train"), ("head_init", stage.head_init, "zero")):
            if value != default and not (stage.weights or stage.pretrained or stage.init_from_coarse):
                raise RecipeError(f"{source}: {name}.{key} = {value!r} applies to a stage that starts from trained "
                                  f"weights ({name}.weights, pretrained or init_from_coarse); this one starts from "
                                  f"scratch")
        if stage.in_chans == 2:
            raise RecipeError(f"{source}: {name}.in_chans = 2: expected 1 (greyscale) or 3 (RGB)")
        if stage.freeze_epochs and stage.freeze_epochs >= stage.epochs:
            raise RecipeError(f"{source}: {name}.freeze_epochs = {stage.freeze_epochs} leaves no epoch of "
                              f"{name}.epochs = {stage.epochs} to train the backbone")
        if not isinstance(stage.augment, str):
            check_augment_list(stage.augment, f"{source}: {name}.augment")


def _check_heads(recipe: Recipe, source: str) -> None:
    hierarchy = recipe.hierarchy
    if not hierarchy.heads:
        if hierarchy.separate:
            raise RecipeError(f"{source}: hierarchy.separate applies to hierarchy.heads, which is not set")
        return
    if hierarchy.groups:
        raise RecipeError(f"{source}: hierarchy.groups and hierarchy.heads are both set; a hierarchy either "
                          f"merges classes into groups or splits them into attributes")
    for name, spec in hierarchy.heads.items():
        size = spec if isinstance(spec, int) else len(spec)
        if size < 2:
            raise RecipeError(f"{source}: hierarchy.heads.{name} = {show_value(spec)}: a head needs at least 2 values")
    joint = joint_class_names([Attribute(name, tuple(spec) if not isinstance(spec, int) else
                                         tuple(str(value) for value in range(spec)))
                               for name, spec in hierarchy.heads.items()])
    if recipe.data.class_names and tuple(recipe.data.class_names) != joint:
        raise RecipeError(f"{source}: with hierarchy.heads the class names come from the heads ({', '.join(joint[:3])}, "
                          f"…); name a head's values with heads = {{ {next(iter(hierarchy.heads))} = [\"name\", …] }} "
                          f"instead of data.class_names, or list exactly those (a flat recipe's, reused)")
    for name, head in recipe.heads:
        for entry in head.weight_schedule:
            if len(entry) != 2 or entry[0] != int(entry[0]) or entry[0] < 1 or entry[1] < 0:
                raise RecipeError(f"{source}: heads.{name}.weight_schedule: expected [epoch, weight] pairs with "
                                  f"epoch ≥ 1 and weight ≥ 0, got {show_value(entry)}")
        starts = [entry[0] for entry in head.weight_schedule]
        if starts != sorted(set(starts)):
            raise RecipeError(f"{source}: heads.{name}.weight_schedule: epochs must increase, got {show_value(starts)}")
    changes = {1} | {int(start) for _, head in recipe.heads for start, _ in head.weight_schedule}
    for epoch in sorted(changes):
        if sum(head.weight_at(epoch) for _, head in recipe.heads) <= 0:
            raise RecipeError(f"{source}: every head's loss weight is 0 in epoch {epoch}; nothing would be learned")
