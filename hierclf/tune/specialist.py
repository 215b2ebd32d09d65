"""Choosing a specialist's settings on one fold, within a budget, before every fold trains.

docs/benchmarks.md chose the Fashion-MNIST specialist by hand: a dozen settings, each trained on
one fold and scored through the combiner on that fold's rows. `tune_specialist` is that search.
Each setting is a variant of the run's [fine.<group>] table, trained on one fold into
RUN/tuning/<group>/<setting>/ (a finished one is kept, so a second call trains only what is new)
and scored by the pipeline's macro-F1 on the fold's rows, which neither the coarse model nor the
specialist of that fold trained on. Its training time is held to a budget, a multiple of the
seconds the coarse stage's same fold took: seconds, not images or megapixels, so that a setting
that trains less of the model (frozen_stages) gets the epochs it saves. The best setting can be
written into the run's recipe, its trained fold moved into the specialist's folder, so that
`fit-fine` trains only the other folds.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from hierclf.combine.base import StageOutputs
from hierclf.combine.registry import COMBINERS
from hierclf.data import Items, load_training_items
from hierclf.errors import HierclfError, OverBudget, RecipeError, RunError, option
from hierclf.hierarchy.build import label_attributes
from hierclf.hierarchy.stage import Stage, folder_name, in_stage
from hierclf.metrics import scores
from hierclf.models.factory import check_arch
from hierclf.recipe.reading import load_recipe
from hierclf.recipe.coerce import suggest
from hierclf.recipe.schema import Recipe, StageConfig
from hierclf.report.costs import Cost, epochs_seconds, fold_training_cost
from hierclf.report.evaluate import out_of_fold
from hierclf.run.fold_files import read_result, read_val, read_val_probs
from hierclf.run.folder import Run, recipe_differences
from hierclf.run.outputs import RunOOF
from hierclf.train.checks import check_fold, check_model, chosen_parts
from hierclf.train.record import RESUME
from hierclf.train.stage import train_stage
from hierclf.tune.bar import Bar, flat_bar

log = logging.getLogger(__name__)

BASELINE = "(the coarse stage alone)"

MAX_SETTINGS = 24
"""More settings than this is a grid search, not a choice within a budget."""


@dataclass(frozen=True)
class Setting:
    """[fine.<group>] keys and their values, as `--set` writes them."""

    keys: tuple[tuple[str, str], ...]

    @property
    def label(self) -> str:
        return " ".join(f"{key}={value}" for key, value in self.keys)

    def overrides(self, group: str) -> list[str]:
        """Its `--set`s; a setting that names weights starts from them, not from the coarse model."""
        sets = [f"fine.{group}.{key}={value}" for key, value in self.keys]
        named = {key for key, _ in self.keys}
        if "weights" in named and "init_from_coarse" not in named:
            sets.append(f"fine.{group}.init_from_coarse=false")
        return sets


STAGE_KEYS = tuple(item.name for item in dataclasses.fields(StageConfig))


def settings_grid(tries: Sequence[str]) -> list[Setting]:
    """Every combination of `KEY=V1,V2,…` (keys of one [fine.<group>] table). Keys joined by `+`
    move together, their values joined by `+` in the same order (an empty one leaves the key as
    the recipe has it): `model+weights=tf_efficientnet_lite2+lite2.safetensors` is one axis."""
    axes: dict[str, list[tuple[tuple[str, str], ...]]] = {}
    for text in tries:
        key, sign, values = text.partition("=")
        keys = tuple(part.strip() for part in key.split("+"))
        if not sign or not all(keys) or any("." in part for part in keys) or not values.strip():
            raise RecipeError(f"{option('tries')} {text!r}: expected KEY=V1,V2,… with a key of the group's [fine.<group>] "
                              f"table, as img_size=40,48 (or KEY+KEY=V+V,… for keys that move together)")
        for part in keys:
            if part not in STAGE_KEYS:
                raise RecipeError(f"{option('tries')} {text!r}: {part} is no key of a [fine.<group>] table{suggest(part, STAGE_KEYS)}")
            if part in {name for named in axes for name in named.split("+")} or keys.count(part) > 1:
                raise RecipeError(f"{option('tries')} {text!r}: {part} is already tried; give all its values in one {option('tries')}")
        axes[key.strip()] = [_zipped(text, keys, value) for value in values.split(",") if value.strip()]
    grid = [Setting(tuple(pair for pairs in values for pair in pairs)) for values in itertools.product(*axes.values())]
    if len(grid) > MAX_SETTINGS:
        raise RecipeError(f"{option('tries')}: {len(grid)} combinations; at most {MAX_SETTINGS} are tried, so give fewer values")
    return grid


def _zipped(text: str, keys: tuple[str, ...], value: str) -> tuple[tuple[str, str], ...]:
    parts = [part.strip() for part in value.split("+")] if len(keys) > 1 else [value.strip()]
    if len(parts) != len(keys):
        raise RecipeError(f"{option('tries')} {text!r}: {value.strip()!r} gives {len(parts)} values for the {len(keys)} keys "
                          f"{'+'.join(keys)}; join one value per key with +")
    return tuple((key, part) for key, part in zip(keys, parts) if part)


@dataclass(frozen=True)
class Trial:
    """One setting on the fold: its cost against the coarse stage's fold, and its scores (None
    where it was not trained); `note` says why it cannot be chosen."""

    setting: Setting
    megapixels: float
    seconds: float | None = None
    within: float | None = None
    macro_f1: float | None = None
    note: str = ""
    labels: np.ndarray | None = field(default=None, compare=False, repr=False)
    """The pipeline's labels of the fold's rows (`_Pipeline.ids`' order)."""

    @property
    def eligible(self) -> bool:
        return not self.note and self.macro_f1 is not None


@dataclass(frozen=True)
class Tuning:
    """Every trial of a group's specialist on one fold, the best one, and where it went."""

    run: Path
    group: str
    fold: int
    budget: float
    combiner: str
    trials: tuple[Trial, ...]
    baseline: float | None
    written: bool = False
    bar: Bar | None = None
    write_asked: bool = False

    @property
    def best(self) -> Trial | None:
        eligible = [trial for trial in self.trials if trial.eligible]
        # the higher score, and between equal scores the cheaper
        return max(eligible, key=lambda trial: (round(trial.macro_f1, 6), -trial.seconds), default=None)

    def lines(self) -> list[str]:
        """The table `hierclf tune-fine` prints, then the verdict and what to run next."""
        width = max([len(trial.setting.label) for trial in self.trials] + [len(BASELINE)])
        lines = [f"{self.group} specialist on fold {self.fold} of {self.run}, {self.combiner} pipeline, "
                 f"budget {self.budget:g}× the coarse fold's seconds", "",
                 f"{'setting':<{width}}  {'megapixels':>10}  {'seconds':>7}  {'within':>6}  {'macro-F1':>8}"]
        if self.baseline is not None:
            lines.append(f"{BASELINE:<{width}}  {'':>10}  {'':>7}  {'':>6}  {self.baseline:>8.4f}")
        for trial in self.trials:
            cells = [f"{trial.megapixels:>9.2f}×",
                     f"{trial.seconds:>6.2f}×" if trial.seconds is not None else f"{'':>7}",
                     f"{trial.within:>6.4f}" if trial.within is not None else f"{'':>6}",
                     f"{trial.macro_f1:>8.4f}" if trial.macro_f1 is not None else f"{'':>8}"]
            note = f"  {trial.note}" if trial.note else ""
            lines.append(f"{trial.setting.label:<{width}}  {'  '.join(cells)}{note}")
        if self.bar is not None:
            lines.append(self.bar.line(width))
        best = self.best
        if best is None:
            return [*lines, "", f"no setting fits within {self.budget:g}× the coarse fold's seconds; raise {option('budget')} "
                                "or try cheaper settings (fewer epochs, a smaller img_size, frozen_stages)"]
        sets = " ".join(f"--set {override}" for override in best.setting.overrides(self.group))
        if self.bar is not None and not self.bar.cleared:
            return [*lines, "", f"best specialist: {best.setting.label}; but {self.bar.verdict()}"
                    + (" Nothing written." if self.write_asked else "")]
        if self.written:
            then = (f"written into {self.run / 'recipe.toml'}, its fold {self.fold} kept. Next: hierclf fit-fine "
                    f"{self.run} --group {self.group}")
        else:
            then = (f"to train it: hierclf fit-fine {self.run} --group {self.group} {sets} (or tune-fine again "
                    f"with --write)")
        if self.bar is not None:
            return [*lines, "", f"best: {best.setting.label}; {self.bar.verdict()} {then[0].upper()}{then[1:]}"]
        return [*lines, "", f"best: {best.setting.label}; {then}"]


@dataclass(frozen=True)
class Search:
    """Where and against what a specialist's settings are tried.

    fold: the fold to train on and score on.
    budget: a setting's epochs may take at most this multiple of the seconds the coarse stage's
        fold took; one that passes it stops there (resumable by a call with a larger budget) and
        is not chosen.
    combiner: the pipeline that scores a setting (default: the recipe's combine.method).
    bar: train the flat model at the best setting's megapixels on the fold (tune/bar.py), and
        choose the specialist only where it beats that model beyond the noise; None: when the
        coarse stage is flat (a hierarchy over a flat run), as the bar is that run's recipe."""

    fold: int = 0
    budget: float = 0.5
    combiner: str | None = None
    bar: bool | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.budget, (int, float)) and math.isfinite(self.budget) and self.budget > 0):
            raise HierclfError(f"{option('budget')} {self.budget}: expected a finite number > 0")
        if not (isinstance(self.fold, int) and self.fold >= 0):
            raise HierclfError(f"{option('fold')} {self.fold}: expected a fold number")


def tune_specialist(run_path: str | Path, group: str, tries: Sequence[str], search: Search = Search(),
                    write: bool = False, items: Items | None = None) -> Tuning:
    """Train `group`'s specialist on `search.fold` with every combination of `tries`, and score each.

    Args:
        run_path: a run folder whose coarse stage has the fold trained.
        group: the group (or head) whose specialist to choose.
        tries: `KEY=V1,V2,…` of its [fine.<group>] keys; every combination is one setting.
        search: the fold, the budget, the combiner and the bar.
        write: put the best setting into the run's recipe and its fold into the specialist's folder.
        items: in-memory rows, the same the coarse stage trained on.

    Returns:
        Every trial, the coarse stage's own macro-F1 on the fold when it predicts the classes, the
        bar, and whether the best was written."""
    fold, budget, combiner, bar = search.fold, search.budget, search.combiner, search.bar
    run = Run.open(run_path)
    if run.hierarchy.is_flat:
        raise RunError(f"{run.root} has {run.hierarchy.describe()}, so there is no specialist to tune; fit a run "
                       f"with [hierarchy] groups (hierarchy.coarse_run reuses this one)")
    parts = [part.name for part in run.hierarchy.parts]
    if group not in parts:
        raise HierclfError(f"{option('group')} {group!r}: {run.hierarchy.part_noun}s are {', '.join(parts)}")
    grid = settings_grid(tries)
    recipe = run.recipe
    name = run.combiner(combiner)
    stages = [_setting_stage(run, group, setting) for setting in grid]  # every check before anything trains
    check_fold(fold, run.folds.fold)
    if not run.fold_finished("coarse", fold):
        raise RunError(f"{run.root}: coarse fold {fold} is not trained; tune on a trained fold ({option('fold')}) or run "
                       f"`hierclf fit-coarse` first")
    if items is None:
        items = load_training_items(recipe.data, label_attributes(recipe.hierarchy), recipe.fine.workers)
    run.folds.check_data(items.ids, items.labels, run.root)
    coarse = fold_training_cost(run, run.coarse_stage, fold)
    pipeline = _Pipeline(run, name, group, fold)
    baseline = pipeline.baseline()
    if bar and baseline is None:
        raise RunError(f"{run.root}: its coarse stage predicts {run.hierarchy.part_noun}s, not the classes, so there "
                       f"is no flat model to train at a matched size ({option('bar')}); compare the pipeline with a flat run "
                       f"by hierclf evaluate --control")
    trials = tuple(_trial(run, setting, stage, items, fold, budget, coarse, pipeline)
                   for setting, stage in zip(grid, stages))
    tuning = Tuning(run.root, group, fold, budget, name, trials, baseline, write_asked=write)
    best = tuning.best
    if (baseline is not None if bar is None else bar) and best is not None:
        measured = flat_bar(run, items, fold, best.megapixels, coarse, pipeline.ids, pipeline.labels, best.labels)
        tuning = dataclasses.replace(tuning, bar=measured)
    if write and best is not None and (tuning.bar is None or tuning.bar.cleared):
        _write_best(run, group, best.setting, fold)
        tuning = dataclasses.replace(tuning, written=True)
    return tuning


def _setting_stage(run: Run, group: str, setting: Setting) -> Stage:
    """The specialist stage a setting gives, checked as `fit-fine` checks it, in a folder of its own."""
    recipe = _recipe_with(run, group, setting)
    stage = dataclasses.replace(run, recipe=recipe).specialist_stages[group]
    check_arch(stage.config.model, f"{stage.key}.model")
    check_model(stage)
    return dataclasses.replace(stage, name=_tried_name(group, setting))


def _tried_name(group: str, setting: Setting) -> str:
    """The stage folder, under the run, of a setting tried on one fold."""
    return f"tuning/{folder_name(group)}/{folder_name(setting.label)}"


def _recipe_with(run: Run, group: str, setting: Setting) -> Recipe:
    recipe = load_recipe(run.recipe_path, setting.overrides(group))
    changed = recipe_differences(run.recipe, recipe)
    if changed:
        raise RecipeError(f"{option('tries')} {setting.label}: tune-fine changes fine.{group}.* keys only, not {changed[0]}")
    chosen_parts(run.hierarchy, recipe, group, run.root)  # the group exists and has a specialist
    return recipe


def _trial(run: Run, setting: Setting, stage: Stage, items: Items, fold: int, budget: float, coarse: Cost,
           pipeline: "_Pipeline") -> Trial:
    """Train the setting on the fold, stopped once its epochs pass the budget, then score it."""
    targets = stage.targets(items.labels)
    rows = int((in_stage(targets) & (run.folds.fold != fold)).sum())
    megapixels = rows * stage.config.epochs * stage.config.img_size ** 2 / 1e6 / max(coarse.megapixels, 1e-12)
    log.info("tune-fine: %s", setting.label)
    run.bind_stage(stage)
    limit, folder = budget * coarse.seconds, run.fold_dir(stage.name, fold)
    try:
        if not run.fold_finished(stage.name, fold) and (folder / RESUME).is_file():
            done, seconds = epochs_seconds(folder)
            if seconds > limit:
                raise OverBudget("stopped by an earlier call", done)  # not one epoch more
        train_stage(run, stage, items, fold, seconds_limit=limit)
    except OverBudget as stopped:
        return Trial(setting, megapixels, note=f"over budget: stopped after epoch {stopped.epochs} of "
                                              f"{stage.config.epochs}")
    seconds = fold_training_cost(run, stage, fold).seconds / max(coarse.seconds, 1e-12)
    within = float(read_result(run.fold_dir(stage.name, fold))["val_accuracy"])
    note = "over budget in seconds" if seconds > budget else ""  # trained by an earlier call with a larger one
    macro_f1, labels = pipeline.score(stage)
    return Trial(setting, megapixels, seconds, within, macro_f1, note, labels)


class _Pipeline:
    """The fold's rows through the combiner: the coarse stage's outputs with one specialist's."""

    def __init__(self, run: Run, combiner: str, group: str, fold: int):
        self.run, self.group, self.fold = run, group, fold
        self.combiner = COMBINERS[combiner].from_config(run.recipe.combine)
        coarse = read_val(run.fold_dir("coarse", fold), run.coarse_stage.layout.width)
        label_of = dict(zip(run.folds.ids.tolist(), run.folds.labels.tolist()))
        self.ids, self.coarse_probs = coarse["ids"], coarse["probs"]
        self.labels = np.asarray([label_of[i] for i in self.ids.tolist()], dtype=np.int64)

    def score(self, stage: Stage) -> tuple[float, np.ndarray]:
        """The pipeline's macro-F1 on the fold's rows with `stage` as the group's specialist, and its labels."""
        special = read_val_probs(self.run.fold_dir(stage.name, self.fold), stage.layout.width, self.ids)
        outputs = StageOutputs(self.coarse_probs, {self.group: special}, self.labels)
        oof = RunOOF(ids=self.ids, folds=np.full(len(self.ids), self.fold), outputs=outputs)
        combined = out_of_fold(self.combiner, self.run.hierarchy, oof, seed=self.run.recipe.folds.seed)
        return scores(self.labels, combined.labels, self.run.hierarchy.num_classes)["macro_f1"], combined.labels

    def baseline(self) -> float | None:
        """The coarse stage's own macro-F1 on the fold, when it predicts the classes (a flat run)."""
        if self.coarse_probs.shape[1] != self.run.hierarchy.num_classes:
            return None
        return scores(self.labels, self.coarse_probs.argmax(1), self.run.hierarchy.num_classes)["macro_f1"]


def _write_best(run: Run, group: str, setting: Setting, fold: int) -> None:
    """The best setting into the run's recipe, and its trained fold into the specialist's folder
    (a rename: the fold is whole or absent), unless that folder already holds the fold."""
    recipe = _recipe_with(run, group, setting)
    stage = dataclasses.replace(run, recipe=recipe).specialist_stages[group]
    try:
        run.check_stage(stage)
    except RunError as error:
        raise HierclfError(f"{option('write')}: {error}") from None
    run.save_recipe(recipe)
    run.bind_stage(stage)
    tried = run.fold_dir(_tried_name(group, setting), fold)
    target = run.fold_dir(stage.name, fold)
    if not target.exists():
        os.replace(tried, target)
