"""The run folder: where every file of a run lives, written atomically, read back with checks.

Layout (see docs/run-folder.md):

    RUN/recipe.toml  hierarchy.json  folds.npz
    RUN/coarse/fold-K/weights.safetensors  model.json  metrics.jsonl  val.npz  result.json
    RUN/coarse/oof.npz  summary.json

A fold is finished when its result.json exists; it is written last. Nothing here unpickles.
"""
from __future__ import annotations

import dataclasses
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hierclf.errors import RunError
from hierclf.hierarchy import Group, Head, Hierarchy, hierarchy_from_json
from hierclf.recipe import Recipe, StageConfig, config_differences, load_recipe, recipe_differences


class RunDir:
    """Paths inside one run folder, and the checks that it belongs to a given recipe."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def recipe_path(self) -> Path:
        return self.root / "recipe.toml"

    @property
    def hierarchy_path(self) -> Path:
        return self.root / "hierarchy.json"

    @property
    def folds_path(self) -> Path:
        return self.root / "folds.npz"

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def fold_dir(self, stage: str, fold: int) -> Path:
        return self.stage_dir(stage) / f"fold-{fold}"

    def oof_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "oof.npz"

    def summary_path(self, stage: str) -> Path:
        return self.stage_dir(stage) / "summary.json"

    def specialist_stage(self, part: Group | Head) -> str:
        """The stage name (and folder, under the run) of one group's (or head's) specialist."""
        return f"fine/{part.folder}"

    def fold_finished(self, stage: str, fold: int) -> bool:
        return (self.fold_dir(stage, fold) / "result.json").is_file()

    def finished_folds(self, stage: str) -> list[int]:
        folder = self.stage_dir(stage)
        if not folder.is_dir():
            return []
        folds = [int(p.name.split("-", 1)[1]) for p in folder.glob("fold-*") if p.name.split("-", 1)[1].isdigit()]
        return sorted(fold for fold in folds if self.fold_finished(stage, fold))

    def prepare(self, recipe: Recipe, hierarchy: Hierarchy) -> None:
        """Create the run folder for `recipe`, or check that an existing one was made by the same
        recipe and hierarchy, so finished folds can be reused and nothing is mixed."""
        if self.recipe_path.exists():
            saved = self.recipe()
            changed = recipe_differences(saved, recipe)
            if changed:
                raise RunError(f"run folder {self.root} was made with another recipe ({'; '.join(changed[:4])}"
                               f"{'; …' if len(changed) > 4 else ''}); use a new --out folder")
            if self.hierarchy_path.exists() and self.hierarchy() != hierarchy:
                raise RunError(f"run folder {self.root} was made for another hierarchy; use a new --out folder")
        elif self.root.exists() and any(self.root.iterdir()):
            raise RunError(f"{self.root} exists and is not a hierclf run folder; use a new --out folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.save_recipe(recipe)
        write_text(self.hierarchy_path, hierarchy.to_json())

    def save_recipe(self, recipe: Recipe) -> None:
        write_text(self.recipe_path, recipe.to_toml())

    def bind_stage(self, stage_name: str, stage: StageConfig, key: str) -> None:
        """Record the training keys a stage folder is trained with (see check_stage)."""
        self.check_stage(stage_name, stage, key)
        write_json(self.stage_dir(stage_name) / "stage.json", dataclasses.asdict(stage))

    def check_stage(self, stage_name: str, stage: StageConfig, key: str) -> None:
        """Refuse training keys other than those a stage folder was trained with, so one stage
        never mixes folds trained two ways."""
        path = self.stage_dir(stage_name) / "stage.json"
        if path.exists():
            saved = StageConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in read_json(path).items()})
            changed = config_differences(saved, stage, key)
            if changed:
                raise RunError(f"{self.stage_dir(stage_name)} was trained with other keys ({'; '.join(changed[:4])}); "
                               f"delete that folder to retrain it, or fit into a new run")

    def recipe(self) -> Recipe:
        if not self.recipe_path.is_file():
            raise RunError(f"{self.root} is not a hierclf run folder (no recipe.toml)")
        return load_recipe(self.recipe_path)

    def hierarchy(self) -> Hierarchy:
        if not self.hierarchy_path.is_file():
            raise RunError(f"{self.root} is not a hierclf run folder (no hierarchy.json)")
        return hierarchy_from_json(self.hierarchy_path.read_text(encoding="utf-8"), str(self.hierarchy_path))


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # honours the umask
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path} cannot be read: {error}") from None


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise TypeError(f"{name}: object arrays would need pickle; use fixed-width strings")
    with atomic_path(path) as temporary:
        with temporary.open("wb") as handle:
            np.savez(handle, **arrays)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path} cannot be read: {error}") from None


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state_dict.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, SafetensorError) as error:
        raise RunError(f"{path} cannot be read: {error}") from None
