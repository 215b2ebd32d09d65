"""The library behind `hierclf fit-coarse` and `hierclf fit-fine`: every check first, then the
run folder, then the stages; the combiners that learn are fit once the last stage is done.

Under torchrun every process runs these: the process group is joined once (`join`); rank 0
runs the checks and writes the run folder (`_start_coarse`, `_start_fine`), and the other
processes then open what it wrote (`_follow`), so each process trains with the same run."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hierclf.combine.registry import choose_combiner
from hierclf.data import Items, load_training_items
from hierclf.data.images import check_images
from hierclf.errors import DataError, HierclfError, RecipeError, RunError, option
from hierclf.hierarchy.build import build_hierarchy, label_attributes
from hierclf.hierarchy.protocol import Part
from hierclf.hierarchy.stage import Stage
from hierclf.models.factory import check_arch
from hierclf.recipe.reading import load_recipe
from hierclf.recipe.schema import Recipe
from hierclf.run.destinations import check_output, recipe_inputs
from hierclf.run.files import check_writable
from hierclf.run.fold_files import read_summary
from hierclf.run.fitted import fit_combiners
from hierclf.run.folder import Folds, Run, open_coarse_run, recipe_differences
from hierclf.runtime.processes import Processes, join
from hierclf.train.checks import (check_fold, check_model, check_processes, check_specialist_tables,
                                  chosen_parts)
from hierclf.train.kfold import split_rows
from hierclf.train.stage import train_stage

log = logging.getLogger(__name__)


def fit_coarse(recipe: Recipe, out: str | Path, only_fold: int | str | None = None,
               items: Items | None = None) -> dict[str, Any] | None:
    """Train a run's coarse stage on every fold: the flat model when the hierarchy has no groups,
    the merged classes with groups, one head per attribute with heads.

    With hierarchy.coarse_run nothing is trained: the run folder is made, pointing at that flat
    run (checked first: same classes, rows, folds and [coarse]), for `fit_fine` to add the
    specialists, and the flat run's summary is returned. Under torchrun every process trains
    each fold together (`hierclf.runtime.processes`).

    Args:
        recipe: the whole job (`load_recipe`).
        out: the run folder to write; an existing one made by the same recipe keeps its
            finished folds.
        only_fold: one fold to train; or "next": every unfinished fold no other process holds.
        items: in-memory rows to train on instead of the recipe's [data].

    Returns:
        The stage's out-of-fold summary (summary.json) once every fold is finished, else None."""
    processes = join()
    # every process was given the same recipe, runtime keys (the device) included: it is the run's
    run, items = processes.main_first(lambda: _start_coarse(recipe, Path(out), only_fold, items, processes),
                                      lambda: _follow(dataclasses.replace(Run.open(out), recipe=recipe), items,
                                                      recipe.coarse.workers))
    if recipe.hierarchy.coarse_run:
        log.info("coarse stage: the flat run %s, not retrained; `hierclf fit-fine %s` trains the specialists",
                 run.coarse_source.root, out)
        return read_summary(run.coarse_source.summary_path("coarse"))
    summary = train_stage(run, run.coarse_stage, items, only_fold, processes)
    if summary is not None:  # a run whose combiners need the coarse stage only (heads without specialists)
        processes.from_main(lambda: fit_combiners(run))
    return summary


def _start_coarse(recipe: Recipe, out: Path, only_fold: int | str | None, items: Items | None,
                  processes: Processes) -> tuple[Run, Items]:
    """Every check, then the run folder."""
    check_output(out, option("out"), reads=recipe_inputs(recipe), folder=True, run=True)
    given = items is not None
    if not given:
        items = load_training_items(recipe.data, label_attributes(recipe.hierarchy), check_files=False)
    if not items.has_labels:
        raise HierclfError("fit_coarse needs a label for every row")
    present = np.unique(items.labels)
    if len(present) < 2:
        raise DataError(f"{recipe.data.source}: every row has the label {items.class_names[present[0]]!r}; a classifier needs "
                        f"at least two classes")
    hierarchy = build_hierarchy(recipe.hierarchy, items.class_names)
    items = dataclasses.replace(items, class_names=hierarchy.class_names)
    choose_combiner(hierarchy, recipe.combine.method, f'combine.method = "{recipe.combine.method}"')
    check_arch(recipe.coarse.model, "coarse.model")
    check_specialist_tables(recipe, hierarchy)
    if not recipe.hierarchy.coarse_run:
        stage = hierarchy.coarse_stage(recipe)
        check_model(stage)
        check_processes(stage, processes)
    if not given and items.paths is not None:
        check_images(items.paths, recipe.coarse.workers)
    fold_of_row = split_rows(items, recipe.folds, recipe.data.source)
    check_fold(only_fold, fold_of_row)
    folds = Folds(ids=items.ids, labels=items.labels, fold=fold_of_row)
    if recipe.hierarchy.coarse_run:
        open_coarse_run(recipe, hierarchy.class_names, folds)  # every check before the folder exists
    return Run.start(out, recipe, hierarchy, folds), items


def fit_fine(run_path: str | Path, group: str | None = None, only_fold: int | str | None = None,
             overrides: Sequence[str] = (), items: Items | None = None) -> dict[str, dict[str, Any] | None]:
    """Train the specialist of every group (or head with a [fine.<head>] table) in the coarse
    stage's folds, so their out-of-fold outputs compose with the coarse stage's. A group
    specialist trains on its group's rows only; a head specialist on every row, its
    probabilities replacing the head's. Under torchrun as `fit_coarse`.

    Args:
        run_path: a run folder `fit_coarse` made.
        group: the one group (or head) whose specialist to train.
        only_fold: one fold to train; or "next" (see `fit_coarse`).
        overrides: `section.key=value` changes of the run's fine.* and combine.* keys.
        items: in-memory rows, the same the coarse stage trained on.

    Returns:
        Each specialist's out-of-fold summary by part name (None for one with folds to go)."""
    processes = join()
    run, chosen, items = processes.main_first(
        lambda: _start_fine(run_path, group, only_fold, overrides, items, processes),
        lambda: _follow_fine(Run.open(run_path), group, items))
    summaries = {}
    for part, stage in chosen:
        processes.from_main(lambda: run.bind_stage(stage))
        summaries[part.name] = train_stage(run, stage, items, only_fold, processes)
    processes.from_main(lambda: fit_combiners(run))
    return summaries


def _start_fine(run_path: str | Path, group: str | None, only_fold: int | str | None, overrides: Sequence[str],
                items: Items | None, processes: Processes) -> tuple[Run, list[tuple[Part, Stage]], Items]:
    """Every check, then the recipe with its overrides saved into the run."""
    run = Run.open(run_path)
    check_writable(run.root, "run folder", folder=True)
    recipe = run.recipe
    if overrides:
        recipe = load_recipe(run.recipe_path, overrides)
        changed = recipe_differences(run.recipe, recipe)
        if changed:
            raise RecipeError(f"fit-fine {option('overrides')} may change fine.* and combine.* keys only, not {changed[0]}")
    hierarchy = run.hierarchy
    if hierarchy.is_flat:
        raise RunError(f"{run.root} has {hierarchy.describe()}, so there is nothing for specialists to refine; "
                       f"set [hierarchy] groups and fit a new run")
    run = dataclasses.replace(run, recipe=recipe)  # the stages as the overrides set them
    run.combiner()
    check_specialist_tables(recipe, hierarchy)
    chosen = _chosen_stages(run, group)
    if items is None:
        items = load_training_items(recipe.data, label_attributes(recipe.hierarchy), recipe.fine.workers)
    run.folds.check_data(items.ids, items.labels, run.root)
    check_fold(only_fold, run.folds.fold)
    for _, stage in chosen:  # every check before anything is written
        check_arch(stage.config.model, f"{stage.key}.model")
        run.check_stage(stage)
        check_model(stage)
        check_processes(stage, processes)
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
        items = load_training_items(run.recipe.data, label_attributes(run.recipe.hierarchy), workers,
                                    check_files=False)
    return run, dataclasses.replace(items, class_names=run.hierarchy.class_names)


def _chosen_stages(run: Run, group: str | None) -> list[tuple[Part, Stage]]:
    return [(part, run.specialist_stages[part.name])
            for part in chosen_parts(run.hierarchy, run.recipe, group, run.root)]
