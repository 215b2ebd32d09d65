"""The checks `fit_coarse` and `fit_fine` run before a run folder is written to: each refuses,
naming the key or option, what would otherwise fail in the middle of training."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from hierclf.errors import HierclfError, RecipeError, option
from hierclf.hierarchy.protocol import Hierarchy, Part
from hierclf.hierarchy.stage import Stage
from hierclf.models.factory import create_model, lowest_stages
from hierclf.recipe.schema import Recipe
from hierclf.runtime.devices import check_precision, resolve_device
from hierclf.runtime.processes import Processes
from hierclf.train.board import check_tensorboard
from hierclf.train.kfold import TRAIN_ONLY
from hierclf.train.stage import NEXT


def check_device(device: str, key: str, precision: str = "fp32") -> None:
    """A device this machine lacks (coarse.device = "cuda" on a laptop), or bf16 steps on a CPU
    without bf16 units, refused naming the key before anything is written."""
    try:
        check_precision(precision, resolve_device(device))
    except HierclfError as error:
        raise RecipeError(f"{key}.{error}") from None


def check_model(stage: Stage) -> None:
    """Build the stage's model once, so a weights file that is missing, unreadable or for another
    architecture, or more frozen stages than it has, is refused before the run folder is written
    to. A specialist started from the coarse model is built without its starting weights (the
    coarse folds give them). The stage's device is resolved first, and the tensorboard package
    looked for where the stage writes event files."""
    config = stage.config
    check_device(config.device, stage.key, config.precision)
    check_tensorboard(config.tensorboard, stage.key)
    if config.init_from_coarse:
        config = dataclasses.replace(config, pretrained=False, weights="")
    model, _ = create_model(config, stage.layout, key=stage.key, separate=stage.separate, seed=0)
    if config.frozen_stages:
        lowest_stages(model, config.frozen_stages, stage.key)


def check_processes(stage: Stage, processes: Processes) -> None:
    """Under torchrun: a global batch the processes can share, and SyncBatchNorm only on CUDA."""
    if not processes.active:
        return
    config = stage.config
    if config.batch_size % processes.world:
        raise RecipeError(f"{stage.key}.batch_size = {config.batch_size} is the batch of all {processes.world} "
                          f"processes together; make it a multiple of {processes.world}")
    device = processes.device(resolve_device(config.device))
    if config.sync_batchnorm and device.type != "cuda":
        raise RecipeError(f"{stage.key}.sync_batchnorm: torch's SyncBatchNorm runs on CUDA only, and this stage "
                          f"trains on {device.type}; set it to false")


def check_specialist_tables(recipe: Recipe, hierarchy: Hierarchy) -> None:
    """Every [fine.<name>] table names a part of the hierarchy."""
    noun, names = hierarchy.part_noun, [part.name for part in hierarchy.parts]
    for name, _ in recipe.specialists:
        if name not in names:
            raise RecipeError(f"[fine.{name}]: there is no {noun} {name!r}; "
                              f"{noun}s are {', '.join(names) if names else '(none)'}")


def check_fold(only_fold: int | str | None, fold_of_row: np.ndarray) -> None:
    if only_fold not in (None, NEXT) and only_fold not in set(fold_of_row.tolist()) - {TRAIN_ONLY}:
        raise HierclfError(f"{option('fold')} {only_fold}: this run has folds 0..{fold_of_row.max()}")


def chosen_parts(hierarchy: Hierarchy, recipe: Recipe, group: str | None, root: Path) -> list[Part]:
    """The parts whose specialist `--group` asks for (every one without it)."""
    noun = hierarchy.part_noun
    parts = hierarchy.specialist_parts(recipe.specialist_names)
    names = [part.name for part in parts]
    if group in [part.name for part in hierarchy.parts] and group not in names:
        raise RecipeError(f"{option('group')} {group!r}: {noun} {group!r} has no specialist; add a [fine.{group}] table to "
                          f"the recipe, or {option('overrides')} fine.{group}.img_size=… (any fine.{group}.* key)")
    if not parts:
        every = ", ".join(part.name for part in hierarchy.parts)
        raise RecipeError(f"{root}: no {noun} has a specialist; add a [fine.<{noun}>] table ({noun}s: {every}) or "
                          f"{option('overrides')} fine.<{noun}>.<key>=…")
    if group is not None and group not in names:
        which = f"{noun}s" if len(parts) == len(hierarchy.parts) else f"{noun}s with a specialist"
        raise HierclfError(f"{option('group')} {group!r}: {which} are {', '.join(names)}")
    return [part for part in parts if group is None or part.name == group]
