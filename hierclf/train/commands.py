"""The library behind `hierclf fit-coarse` and `hierclf fit-fine`: every check first, then the
run folder, then the stages; the combiners that learn are fit once the last stage is done."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hierclf.data import Items, load_training_items
from hierclf.runtime.devices import resolve_device
from hierclf.runtime.processes import Processes, join
from hierclf.errors import HierclfError, RecipeError, RunError
from hierclf.run.files import check_writable, read_json
from hierclf.hierarchy.kinds import Hierarchy, Part, build_hierarchy
from hierclf.models.factory import check_arch, create_model
from hierclf.run.outputs import fit_combiners
from hierclf.recipe.schema import Recipe
from hierclf.recipe.reading import load_recipe
from hierclf.run.folder import Folds, Run, open_coarse_run, recipe_differences
from hierclf.hierarchy.stage import Stage
from hierclf.train.kfold import TRAIN_ONLY, assign_folds
from hierclf.train.stage import NEXT, train_stage

log = logging.getLogger(__name__)


def fit_coarse(recipe: Recipe, out: str | Path, only_fold: int | None = None,
               items: Items | None = None) -> dict[str, Any] | None:
    """Train the coarse stage (the flat model when the hierarchy has no groups; one head per
    attribute with [hierarchy] heads) on every fold, or on `only_fold`. Rows come from the
    recipe's [data], or from `items` (in-memory arrays). Returns the out-of-fold summary once
    every fold is finished, else None.

    With hierarchy.coarse_run, nothing is trained: the run folder is made, pointing at that flat
    run (checked first: same classes, rows, folds and [coarse]), for `fit_fine` to add the
    specialists; the flat run's summary is returned.

    Under torchrun, every process trains each fold together (`hierclf.runtime.processes`): rank 0
    checks and writes the run folder, the others then open it."""
    processes = join()
    # every process was given the same recipe, runtime keys (the device) included: it is the run's
    run, items = processes.main_first(lambda: _start_coarse(recipe, Path(out), only_fold, items, processes),
                                      lambda: _follow(dataclasses.replace(Run.open(out), recipe=recipe), items,
                                                      recipe.coarse.workers))
    if recipe.hierarchy.coarse_run:
        log.info("coarse stage: the flat run %s, not retrained; `hierclf fit-fine %s` trains the specialists",
                 run.coarse_source.root, out)
        return read_json(run.coarse_source.summary_path("coarse"))
    summary = train_stage(run, run.coarse_stage, items, run.folds.fold, only_fold, processes)
    if summary is not None:  # a run whose combiners need the coarse stage only (heads without specialists)
        processes.from_main(lambda: fit_combiners(run))
    return summary


def _start_coarse(recipe: Recipe, out: Path, only_fold: int | None, items: Items | None,
                  processes: Processes) -> tuple[Run, Items]:
    """Every check, then the run folder."""
    check_writable(out, "--out", folder=True)
    items = load_training_items(recipe.data, recipe.hierarchy, recipe.coarse.workers) if items is None else items
    if not items.has_labels:
        raise HierclfError("fit_coarse needs a label for every row")
    hierarchy = build_hierarchy(recipe.hierarchy, items.class_names)
    items = dataclasses.replace(items, class_names=hierarchy.class_names)
    hierarchy.combiner_for(recipe.combine.method, f'combine.method = "{recipe.combine.method}"')
    check_arch(recipe.coarse.model, "coarse.model")
    _check_specialist_tables(recipe, hierarchy)
    if not recipe.hierarchy.coarse_run:
        stage = hierarchy.coarse_stage(recipe)
        _check_model(stage)
        _check_processes(stage, processes)
    fold_of_row = assign_folds(items.labels, items.fold_groups, recipe.folds, items.class_names)
    _check_fold(only_fold, fold_of_row)
    folds = Folds(ids=items.ids, labels=items.labels, fold=fold_of_row)
    if recipe.hierarchy.coarse_run:
        open_coarse_run(recipe, hierarchy.class_names, folds)  # every check before the folder exists
    return Run.start(out, recipe, hierarchy, folds), items


def fit_fine(run_path: str | Path, group: str | None = None, only_fold: int | None = None,
             overrides: Sequence[str] = (), items: Items | None = None) -> dict[str, dict[str, Any] | None]:
    """Train the specialist of every group (or of `group`) in the coarse stage's folds, so their
    out-of-fold outputs compose with the coarse stage's. A group specialist trains on its group's
    rows only; in a run with attribute heads, each head with a [fine.<head>] table gets a
    specialist trained on every row, whose probabilities replace that head's. `overrides` change
    fine.* and combine.* keys of the run's recipe. Returns each specialist's OOF summary.

    Under torchrun, as `fit_coarse`: rank 0 checks and writes, every process trains."""
    processes = join()
    run, chosen, items = processes.main_first(
        lambda: _start_fine(run_path, group, only_fold, overrides, items, processes),
        lambda: _follow_fine(Run.open(run_path), group, items))
    summaries = {}
    for part, stage in chosen:
        processes.from_main(lambda: run.bind_stage(stage))
        summaries[part.name] = train_stage(run, stage, items, run.folds.fold, only_fold, processes)
    processes.from_main(lambda: fit_combiners(run))
    return summaries


def _start_fine(run_path: str | Path, group: str | None, only_fold: int | None, overrides: Sequence[str],
                items: Items | None, processes: Processes) -> tuple[Run, list[tuple[Part, Stage]], Items]:
    """Every check, then the recipe with its overrides saved into the run."""
    run = Run.open(run_path)
    check_writable(run.root, "run folder", folder=True)
    recipe = run.recipe
    if overrides:
        recipe = load_recipe(run.recipe_path, overrides)
        changed = recipe_differences(run.recipe, recipe)
        if changed:
            raise RecipeError(f"fit-fine --set may change fine.* and combine.* keys only, not {changed[0]}")
    hierarchy = run.hierarchy
    if hierarchy.is_flat:
        raise RunError(f"{run.root} has {hierarchy.describe()}, so there is nothing for specialists to refine; "
                       f"set [hierarchy] groups and fit a new run")
    _check_specialist_tables(recipe, hierarchy)
    run = dataclasses.replace(run, recipe=recipe)  # the stages as the overrides set them
    chosen = _chosen_stages(run, group)
    items = load_training_items(recipe.data, recipe.hierarchy, recipe.fine.workers) if items is None else items
    run.folds.check_data(items.ids, items.labels, run.root)
    _check_fold(only_fold, run.folds.fold)
    for _, stage in chosen:  # every check before anything is written
        check_arch(stage.config.model, f"{stage.key}.model")
        run.check_stage(stage)
        if not stage.config.init_from_coarse:
            _check_model(stage)
        _check_processes(stage, processes)
    run.save_recipe(recipe)
    run.sweep()
    return run, chosen, items


def _follow_fine(run: Run, group: str | None, items: Items | None) -> tuple[Run, list[tuple[Part, Stage]], Items]:
    """What a process other than rank 0 needs once rank 0 has checked and saved the recipe."""
    run, items = _follow(run, items, run.recipe.fine.workers)
    return run, _chosen_stages(run, group), items


def _follow(run: Run, items: Items | None, workers: int) -> tuple[Run, Items]:
    """The run rank 0 has checked and written, and its rows, for the other processes: their
    images are not decoded again to check them."""
    if items is None:
        items = load_training_items(run.recipe.data, run.recipe.hierarchy, workers, check_files=False)
    return run, dataclasses.replace(items, class_names=run.hierarchy.class_names)


def _chosen_stages(run: Run, group: str | None) -> list[tuple[Part, Stage]]:
    return [(part, run.specialist_stages[part.name])
            for part in _chosen_parts(run.hierarchy, run.recipe, group, run.root)]


def _chosen_parts(hierarchy: Hierarchy, recipe: Recipe, group: str | None, root: Path) -> list[Part]:
    """The parts whose specialist `--group` asks for (every one without it)."""
    noun = hierarchy.part_noun
    parts = hierarchy.specialist_parts(recipe.specialist_names)
    names = [part.name for part in parts]
    if group in [part.name for part in hierarchy.parts] and group not in names:
        raise RecipeError(f"--group {group!r}: {noun} {group!r} has no specialist; add a [fine.{group}] table to "
                          f"the recipe, or --set fine.{group}.img_size=… (any fine.{group}.* key)")
    if not parts:
        every = ", ".join(part.name for part in hierarchy.parts)
        raise RecipeError(f"{root}: no {noun} has a specialist; add a [fine.<{noun}>] table ({noun}s: {every}) or "
                          f"--set fine.<{noun}>.<key>=…")
    if group is not None and group not in names:
        which = f"{noun}s" if len(parts) == len(hierarchy.parts) else f"{noun}s with a specialist"
        raise HierclfError(f"--group {group!r}: {which} are {', '.join(names)}")
    return [part for part in parts if group is None or part.name == group]


def _check_model(stage: Stage) -> None:
    """Build the stage's model once, so a weights file that is missing, unreadable or for another
    architecture is refused before the run folder is written to."""
    create_model(stage.config, stage.layout, key=stage.key, separate=stage.separate, seed=0)


def _check_processes(stage: Stage, processes: Processes) -> None:
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


def _check_specialist_tables(recipe: Recipe, hierarchy: Hierarchy) -> None:
    noun, names = hierarchy.part_noun, [part.name for part in hierarchy.parts]
    for name, _ in recipe.specialists:
        if name not in names:
            raise RecipeError(f"[fine.{name}]: there is no {noun} {name!r}; "
                              f"{noun}s are {', '.join(names) if names else '(none)'}")


def _check_fold(only_fold: int | str | None, fold_of_row: np.ndarray) -> None:
    if only_fold not in (None, NEXT) and only_fold not in set(fold_of_row.tolist()) - {TRAIN_ONLY}:
        raise HierclfError(f"--fold {only_fold}: this run has folds 0..{fold_of_row.max()}")
