"""The run folder: where every file of a run lives, and the run opened once with its recipe,
hierarchy and folds.

Layout (see docs/run-folder.md):

    RUN/recipe.toml  hierarchy.json  folds.npz  combiner.json
    RUN/coarse/fold-K/weights.safetensors  model.json  metrics.jsonl  val.npz  result.json
    RUN/coarse/oof.npz  summary.json
    RUN/fine/<part>/stage.json  fold-K/…  oof.npz  summary.json

A run whose recipe names a flat run as its coarse stage (hierarchy.coarse_run) has no coarse/
folder: its coarse stage's paths are that run's, which is read and never written.

A fold is finished when its result.json exists; it is written last. Nothing here unpickles.
"""
from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.recipe.coerce import build_config, show_value
from hierclf.combine.registry import choose_combiner
from hierclf.errors import RecipeError, RunError, option
from hierclf.readback import ReadBack
from hierclf.hierarchy.build import build_hierarchy, hierarchy_from_json
from hierclf.hierarchy.protocol import Hierarchy
from hierclf.run.files import is_temporary, read_json, read_npz, write_json, write_npz, write_text
from hierclf.run.locks import sweep_temporary
from hierclf.recipe.schema import RUN_SECTIONS, Recipe, StageConfig, learned_keys
from hierclf.recipe.reading import load_recipe
from hierclf.hierarchy.stage import Stage

log = logging.getLogger(__name__)

TRAIN_ONLY = -1
"""The fold of a row that is trained on in every fold and validated in none."""


@dataclass(frozen=True, eq=False)
class Folds:
    """The fold of every training row, fixed when the run starts: ids, labels, fold (-1: training only)."""

    ids: np.ndarray
    labels: np.ndarray
    fold: np.ndarray

    def matches(self, other: "Folds") -> bool:
        """The same rows, labels and folds: two runs whose out-of-fold outputs line up."""
        return all(np.array_equal(getattr(self, name), getattr(other, name)) for name in ("ids", "labels", "fold"))

    def check_data(self, ids: np.ndarray, labels: np.ndarray, root: Path) -> None:
        """Refuse training rows other than those the run at `root` was split on."""
        if not (np.array_equal(self.ids, ids) and np.array_equal(self.labels, labels)):
            raise RunError(f"{root}: the training data changed since this run folder was made "
                           f"(other images or labels); use a new {option('out')} folder")


@dataclass(frozen=True, eq=False)
class Run:
    """One run folder, its recipe and hierarchy read once (`Run.open`), and the paths inside it."""

    root: Path
    recipe: Recipe
    hierarchy: Hierarchy

    # --- opening and starting

    @classmethod
    def open(cls, root: str | Path) -> "Run":
        """An existing run folder, read and checked once."""
        root = Path(root)
        for name in ("recipe.toml", "hierarchy.json"):
            if not (root / name).is_file():
                raise RunError(f"{root} is not a hierclf run folder (no {name})")
        hierarchy_path = root / "hierarchy.json"
        hierarchy = hierarchy_from_json(hierarchy_path.read_text(encoding="utf-8"), str(hierarchy_path))
        recipe = load_recipe(root / "recipe.toml")
        _check_same_hierarchy(recipe, hierarchy, root)
        return cls(root=root, recipe=recipe, hierarchy=hierarchy)

    @classmethod
    def start(cls, root: str | Path, recipe: Recipe, hierarchy: Hierarchy, folds: Folds) -> "Run":
        """Create the run folder for `recipe`, or check that an existing one was made by the same
        recipe, hierarchy and folds, so finished folds can be reused and nothing is mixed."""
        root = Path(root)
        if (root / "recipe.toml").exists():
            begun = not (root / "hierarchy.json").exists()  # killed after its first write: resumed from there
            existing = cls(root, load_recipe(root / "recipe.toml"), hierarchy) if begun else cls.open(root)
            changed = recipe_differences(existing.recipe, recipe)
            if changed:
                raise RunError(f"run folder {root} was made with another recipe ({'; '.join(changed[:4])}"
                               f"{'; …' if len(changed) > 4 else ''}); use a new {option('out')} folder")
            if begun and any(entry.name != "recipe.toml" and not is_temporary(entry) for entry in root.iterdir()):
                raise RunError(f"{root} holds a recipe.toml but no hierarchy.json, and other files: it is not a "
                               f"hierclf run folder; use a new {option('out')} folder")
            if existing.hierarchy != hierarchy:
                raise RunError(f"run folder {root} was made for another hierarchy; use a new {option('out')} folder")
            if existing.folds_path.exists():
                existing.folds.check_data(folds.ids, folds.labels, root)
                if not np.array_equal(existing.folds.fold, folds.fold):
                    raise RunError(f"{root} was split into other folds; use a new {option('out')} folder")
        elif root.exists() and any(not is_temporary(entry) for entry in root.iterdir()):
            raise RunError(f"{root} exists and is not a hierclf run folder; use a new {option('out')} folder")
        run = cls(root=root, recipe=recipe, hierarchy=hierarchy)
        run.sweep()
        root.mkdir(parents=True, exist_ok=True)
        run.save_recipe(recipe)
        write_text(run.hierarchy_path, hierarchy.to_json())
        if not run.folds_path.exists():
            write_npz(run.folds_path, ids=folds.ids, labels=folds.labels, fold=folds.fold)
        return run

    def sweep(self) -> None:
        """Delete the temporary files and locks killed processes left in the run folder."""
        for path in sweep_temporary(self.root):
            log.info("removed %s, left by a process that was killed", path)

    def save_recipe(self, recipe: Recipe) -> None:
        write_text(self.recipe_path, recipe.to_toml())

    # --- what the run holds

    @cached_property
    def folds(self) -> Folds:
        """The fold of every training row (folds.npz), read on first use."""
        if not self.folds_path.exists():
            raise RunError(f"{self.root} has no folds.npz; run `hierclf fit-coarse` first")
        saved = read_npz(self.folds_path)
        check = ReadBack(str(self.folds_path), "it is the run's own split: restore it, or fit a new run")
        ids, labels, fold = (check.field(saved, key) for key in ("ids", "labels", "fold"))
        classes = self.hierarchy.num_classes
        if not (ids.ndim == labels.ndim == fold.ndim == 1 and len(ids) == len(labels) == len(fold) > 0):
            check.fail(f"ids, labels and fold are not one value per row ({ids.shape}, {labels.shape}, {fold.shape})")
        if labels.dtype.kind not in "iu" or fold.dtype.kind not in "iu" or len(set(ids.tolist())) != len(ids):
            check.fail("its labels and folds are not whole numbers, or an id appears twice")
        if labels.min() < 0 or labels.max() >= classes or fold.min() < TRAIN_ONLY:
            check.fail(f"a label is outside 0..{classes - 1} or a fold below {TRAIN_ONLY}")
        return Folds(ids=ids, labels=labels, fold=fold)

    @cached_property
    def coarse_source(self) -> "Run | None":
        """The flat run whose fold models are this run's coarse stage (hierarchy.coarse_run),
        checked against this run's classes, folds and [coarse]; None when the run trains its own."""
        if not self.recipe.hierarchy.coarse_run:
            return None
        return open_coarse_run(self.recipe, self.hierarchy.class_names, self.folds)

    @cached_property
    def coarse_stage(self) -> Stage:
        return self.hierarchy.coarse_stage(self.recipe)

    @cached_property
    def specialist_stages(self) -> dict[str, Stage]:
        """The stage of each part with a specialist, by part name, in the hierarchy's order."""
        parts = self.hierarchy.specialist_parts(self.recipe.specialist_names)
        return {part.name: self.hierarchy.specialist_stage(part, self.recipe) for part in parts}

    @property
    def stages(self) -> list[Stage]:
        """The coarse stage, then every specialist's."""
        return [self.coarse_stage, *self.specialist_stages.values()]

    def combiner(self, requested: str | None = None) -> str:
        """The combiner this run combines by when `requested` is asked for (None: its recipe's
        combine.method): a flat run has one pipeline whatever is asked; one that cannot combine
        its hierarchy is refused, naming what asked and what it needs. The one place it is decided."""
        method = requested or self.recipe.combine.method
        where = f"{option('combiner')} {requested!r}" if requested else f'{self.recipe_path}: combine.method = "{method}"'
        return choose_combiner(self.hierarchy, method, where)

    # --- paths

    @property
    def recipe_path(self) -> Path:
        return self.root / "recipe.toml"

    @property
    def hierarchy_path(self) -> Path:
        return self.root / "hierarchy.json"

    @property
    def folds_path(self) -> Path:
        return self.root / "folds.npz"

    @property
    def probe_path(self) -> Path:
        """Present in a linear probe's run folder (`hierclf probe`): the regression's settings."""
        return self.root / "probe.json"

    @property
    def is_probe(self) -> bool:
        return self.probe_path.is_file()

    @property
    def combiner_path(self) -> Path:
        return self.root / "combiner.json"

    @property
    def calibration_path(self) -> Path:
        return self.root / "calibration.json"

    def stage_dir(self, stage: str) -> Path:
        if stage == "coarse" and self.coarse_source is not None:
            return self.coarse_source.stage_dir(stage)
        return self.root / stage

    def fold_dir(self, stage: str, fold: int) -> Path:
        return self.stage_dir(stage) / f"fold-{fold}"

    def oof_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "oof.npz"

    def summary_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "summary.json"

    def fold_finished(self, stage: str, fold: int) -> bool:
        return (self.fold_dir(stage, fold) / "result.json").is_file()

    def finished_folds(self, stage: str) -> list[int]:
        folder = self.stage_dir(stage)
        if not folder.is_dir():
            return []
        folds = [int(p.name.split("-", 1)[1]) for p in folder.glob("fold-*") if p.name.split("-", 1)[1].isdigit()]
        return sorted(fold for fold in folds if self.fold_finished(stage, fold))

    # --- a stage folder is bound to the keys it was trained with

    def bind_stage(self, stage: Stage) -> None:
        """Record the training keys a stage folder is trained with (see check_stage)."""
        self.check_stage(stage)
        write_json(self.stage_dir(stage.name) / "stage.json", dataclasses.asdict(stage.config))

    def check_stage(self, stage: Stage) -> None:
        """Refuse training keys other than those a stage folder was trained with, so one stage
        never mixes folds trained two ways."""
        path = self.stage_dir(stage.name) / "stage.json"
        if path.exists():
            try:
                saved = build_config(StageConfig, read_json(path), stage.key, str(path))
            except RecipeError as error:
                raise RunError(f"{error}; delete {path.parent} to retrain that stage, or fit into a new run") from None
            changed = config_differences(saved, stage.config, stage.key)
            if changed:
                raise RunError(f"{self.stage_dir(stage.name)} was trained with other keys ({'; '.join(changed[:4])}); "
                               f"delete that folder to retrain it, or fit into a new run")


def _check_same_hierarchy(recipe: Recipe, hierarchy: Hierarchy, root: Path) -> None:
    """Refuse a run whose recipe.toml was edited to another hierarchy than the one its stages were
    trained for (hierarchy.json)."""
    try:
        described = build_hierarchy(recipe.hierarchy, hierarchy.class_names)
    except RecipeError as error:
        described = None
        reason = str(error)
    if described != hierarchy:
        now = described.describe() if described is not None else reason
        raise RunError(f"{root}: recipe.toml's [hierarchy] ({now}) is not the hierarchy this run was made for "
                       f"(hierarchy.json: {hierarchy.describe()}); restore recipe.toml, or fit a new run")


def open_coarse_run(recipe: Recipe, class_names: typing.Sequence[str], folds: Folds) -> Run:
    """The flat run `recipe` names as its coarse stage, refused unless it is a finished flat run
    over the same classes and rows, split into the same folds, trained with the same [coarse]."""
    path = Path(recipe.hierarchy.coarse_run)
    where = f"hierarchy.coarse_run = '{path}'"
    try:
        source = Run.open(path)
    except RunError as error:
        raise RunError(f"{where}: {error}") from None
    if not source.hierarchy.is_flat or source.hierarchy.class_names != tuple(class_names):
        raise RunError(f"{where}: that run has {source.hierarchy.describe()}; the coarse stage must be a flat run "
                       f"over this run's classes")
    if not source.folds.matches(folds):
        raise RunError(f"{where}: that run was split into other folds or rows (its folds.npz differs from this "
                       f"run's); give both the same [data] and [folds], or fit the flat run again")
    changed = config_differences(source.recipe.coarse, recipe.coarse, "coarse")
    if changed:
        raise RunError(f"{where}: [coarse] must be that run's, as it is that run's models "
                       f"({'; '.join(changed[:3])}); copy its [coarse] table")
    if not source.oof_path("coarse").exists():
        raise RunError(f"{where}: that run is not finished (no coarse/oof.npz); run `hierclf fit-coarse` there "
                       f"until every fold is trained")
    return source


def recipe_differences(old: Recipe, new: Recipe, sections: typing.Sequence[str] = RUN_SECTIONS) -> list[str]:
    """Keys of `sections` that change what a run learns (runtime keys such as workers excluded)."""
    changed = []
    for section in sections:
        if section == "heads":
            old_heads, new_heads = dict(old.heads), dict(new.heads)
            for name in sorted(set(old_heads) | set(new_heads)):
                if name in old_heads and name in new_heads:
                    changed += config_differences(old_heads[name], new_heads[name], f"heads.{name}")
                else:
                    changed.append(f"heads.{name}: {'removed' if name in old_heads else 'added'}")
            continue
        changed += config_differences(getattr(old, section), getattr(new, section), section)
    return changed


def config_differences(old: Any, new: Any, prefix: str) -> list[str]:
    """`prefix.key: old → new` for every non-runtime key that differs between two config objects."""
    before, after = learned_keys(old), learned_keys(new)
    return [f"{prefix}.{name}: {show_value(value)} → {show_value(after[name])}"
            for name, value in before.items() if value != after[name]]
