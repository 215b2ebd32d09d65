"""`HierarchicalClassifier`: the library as a scikit-learn estimator, for notebooks, pipelines,
`cross_val_score` and `GridSearchCV`. It builds a recipe and calls `fit_coarse`, `fit_fine` and
`predict_items`: no second code path.
"""
from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.validation import check_is_fitted

from hierclf.data import Items
from hierclf.data.images import check_images
from hierclf.errors import DataError, HierclfError, RecipeError
from hierclf.recipe.schema import SECTIONS, Recipe, plain
from hierclf.recipe.reading import load_recipe, recipe_from_dict
from hierclf.run.files import is_temporary
from hierclf.run.locks import LOCK


class HierarchicalClassifier(ClassifierMixin, BaseEstimator):
    """A flat or hierarchical image classifier, trained with leakage-safe K-fold.

    Parameters
    ----------
    recipe : path to a TOML recipe, a dict of its tables, a `Recipe`, or None (the defaults).
        Its [data] section is ignored: the rows are `fit`'s X and y.
    groups : groups of confusable classes, each a list of class labels as they appear in y
        (hierarchy.groups), or None.
    heads : attribute heads ({name: size or value names}, hierarchy.heads), or None.
    overrides : {"coarse.lr": 0.01, …}: recipe keys set on top. `set_params(coarse__lr=0.01)`
        (and so `GridSearchCV` over `coarse__lr`) lands here.
    random_state : seeds the folds and every stage; nothing else draws randomness.
    run_dir : a folder to keep the runs in: each fit trains into its own run folder there,
        `fit-<fingerprint>`, named by the images, labels and recipe it was given, so a refit on
        other data (each split of `cross_val_score`, each candidate of `GridSearchCV`) trains
        anew and a refit on the same data and recipe resumes the finished run. None trains into
        a temporary folder, removed when the estimator is garbage-collected.
    combiner : the combiner `predict_proba` uses (default: the recipe's combine.method).
    device : where training and prediction run ("cpu", "cuda", "auto").

    Attributes after `fit`: `classes_` (the labels of y, any type, sorted as LabelEncoder sorts
    them), `run_dir_` (the run folder this fit trained).

    X is an array of uint8 images, N×H×W or N×H×W×C, or a sequence of image file paths.
    `predict_proba` returns float64 rows over `classes_` summing to 1: the soft vote of the K fold
    models (and specialists) through the combiner, exactly `predict_items` on the run.

    What does not hold: scikit-learn's `check_estimator` expects tabular X of floats, which an
    image classifier does not take, and each `fit` trains K models (seconds to hours), so
    `GridSearchCV` multiplies real training time by its grid and splits.
    """

    def __init__(self, recipe: str | Path | Mapping[str, Any] | Recipe | None = None,
                 groups: Sequence[Sequence[Any]] | None = None, heads: Mapping[str, Any] | None = None,
                 overrides: Mapping[str, Any] | None = None, random_state: int = 0,
                 run_dir: str | Path | None = None, combiner: str | None = None, device: str = "auto"):
        self.recipe = recipe
        self.groups = groups
        self.heads = heads
        self.overrides = overrides
        self.random_state = random_state
        self.run_dir = run_dir
        self.combiner = combiner
        self.device = device

    # --- scikit-learn's parameter protocol, with recipe keys as section__key

    def set_params(self, **params: Any) -> "HierarchicalClassifier":
        """Estimator parameters, or recipe keys as `section__key` (`coarse__lr`,
        `fine__tops__img_size`), which go into `overrides`."""
        keys = {name: value for name, value in params.items() if name.split("__", 1)[0] in SECTIONS}
        if keys:
            merged = dict(self.overrides or {})
            merged.update({name.replace("__", "."): value for name, value in keys.items()})
            self.overrides = merged
        rest = {name: value for name, value in params.items() if name not in keys}
        return super().set_params(**rest) if rest else self

    # --- fitting and predicting

    def fit(self, X: Any, y: Sequence[Any]) -> "HierarchicalClassifier":
        from hierclf.train import fit_coarse, fit_fine

        y = _checked_labels(y, _row_count(X))
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        names = [str(label) for label in self.classes_]
        if len(set(names)) != len(names):
            raise HierclfError(f"labels {list(self.classes_)} do not stay apart as text; use distinct labels")
        items = _items(X, encoder.transform(y), names)
        recipe = self._build_recipe(names)
        run_dir = _temporary_run(self) if self.run_dir is None else _fit_folder(Path(self.run_dir), items, recipe)
        fit_coarse(recipe, run_dir, items=items)
        if recipe.hierarchy.groups or recipe.specialists:
            fit_fine(run_dir, items=items)
        self.run_dir_ = run_dir
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        from hierclf.predict.pipeline import Inference, predict_items

        check_is_fitted(self, "run_dir_")
        items = _items(X, None, [str(label) for label in self.classes_])
        predictions = predict_items(self.run_dir_, items, combiner=self.combiner,
                                    inference=Inference(workers=0, device=self.device))
        return np.asarray(predictions.probs, dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "run_dir_")
        return self.classes_[self.predict_proba(X).argmax(1)]

    # --- pickling and copying: a run in a temporary folder travels inside the estimator

    def __getstate__(self) -> dict[str, Any]:
        """A fitted estimator whose run lives in a temporary folder (run_dir=None) carries that
        run's files, so it predicts in another process, and a copy outlives the original; with
        run_dir set it points at that folder, which stays where the user put it."""
        state = dict(self.__dict__)
        if self.run_dir is None and "run_dir_" in state:
            root = Path(state.pop("run_dir_"))
            state["_run_files"] = {str(path.relative_to(root)): path.read_bytes()
                                   for path in sorted(root.rglob("*")) if _kept_file(path)}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        files = state.pop("_run_files", None)
        self.__dict__.update(state)
        if files is not None:
            self.run_dir_ = _temporary_run(self)
            for name, content in files.items():
                path = self.run_dir_ / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)

    # --- the recipe this estimator trains with

    def _build_recipe(self, class_names: list[str]) -> Recipe:
        tables = _recipe_tables(self.recipe)
        tables.pop("data", None)
        tables.setdefault("data", {})["class_names"] = class_names
        hierarchy = tables.setdefault("hierarchy", {})
        if self.groups is not None:
            hierarchy["groups"] = [[str(label) for label in group] for group in self.groups]
        if self.heads is not None:
            hierarchy["heads"] = dict(self.heads)
        for name, value in (self.overrides or {}).items():
            *path, key = name.split(".")
            table = tables
            for part in path:
                table = table.setdefault(part, {})
            table[key] = value
        tables.setdefault("folds", {})["seed"] = self.random_state
        return recipe_from_dict(tables, source="HierarchicalClassifier").with_seed(self.random_state)


def _recipe_tables(recipe: str | Path | Mapping[str, Any] | Recipe | None) -> dict[str, Any]:
    """The recipe's tables as plain nested dicts, keys left at their defaults omitted."""
    if recipe is None:
        return {}
    if isinstance(recipe, (str, Path)):
        recipe = load_recipe(recipe)
    if isinstance(recipe, Recipe):
        return plain(recipe.to_dict())
    if isinstance(recipe, Mapping):
        return copy.deepcopy(dict(recipe))
    raise RecipeError(f"recipe: expected a path, a dict of tables or a Recipe, got {type(recipe).__name__}")


def _temporary_run(estimator: HierarchicalClassifier) -> Path:
    """A run folder in a new temporary folder, removed when `estimator` is garbage-collected."""
    folder = Path(tempfile.mkdtemp(prefix="hierclf-"))
    weakref.finalize(estimator, shutil.rmtree, str(folder), True)
    return folder / "run"


def _fit_folder(run_dir: Path, items: Items, recipe: Recipe) -> Path:
    """The run folder under `run_dir` for this data and recipe (see the class's `run_dir`)."""
    from hierclf.run.destinations import check_output, is_run_folder

    if is_run_folder(run_dir):
        raise HierclfError(f"run_dir {run_dir} is a run folder; each fit trains into a folder of its own under "
                           f"run_dir, so give the folder to keep them in")
    check_output(run_dir, "run_dir", folder=True)
    digest = hashlib.sha256(recipe.to_toml().encode())
    digest.update(np.asarray(items.labels, dtype=np.int64).tobytes())
    if items.images is not None:
        digest.update(f"{items.images.shape} {items.images.dtype}".encode())
        digest.update(np.ascontiguousarray(items.images).data)
    else:
        for path in items.paths:
            found = os.stat(path)
            digest.update(f"{os.path.abspath(path)}\0{found.st_size}\0{found.st_mtime_ns}\n".encode())
    return run_dir / f"fit-{digest.hexdigest()[:16]}"


def _kept_file(path: Path) -> bool:
    """A run's own file: not one being written, nor a lock."""
    return path.is_file() and not is_temporary(path) and path.name != LOCK


def _row_count(X: Any) -> int:
    """How many rows X holds, refusing what is neither images nor image paths."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim < 3 or X.dtype.kind not in "ui":
            raise DataError(f"X: expected uint8 images (N×H×W or N×H×W×C) or a sequence of image paths, got a "
                            f"{X.ndim}-D {X.dtype} array of shape {X.shape}; tabular data needs another model")
    elif isinstance(X, (str, bytes, Path)) or not hasattr(X, "__len__"):
        raise DataError(f"X: expected images or a sequence of image paths, got {type(X).__name__}")
    if len(X) == 0:
        raise DataError("X holds no rows")
    return len(X)


def _checked_labels(y: Any, rows: int) -> np.ndarray:
    """y as a 1-D array, one label per row of X, none missing, at least two classes."""
    labels = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
    if labels.ndim != 1:
        raise DataError(f"y: expected one label per row (1-D), got shape {labels.shape}")
    if len(labels) != rows:
        raise DataError(f"X has {rows} rows but y has {len(labels)} labels")
    missing = [row for row, label in enumerate(labels.tolist())
               if label is None or (isinstance(label, float) and np.isnan(label))]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"y: row {missing[0]} has no label (None or NaN){more}")
    if labels.dtype == object:
        labels = np.asarray(labels.tolist())
    distinct = np.unique(labels)
    if len(distinct) < 2:
        raise DataError(f"y: every row has the label {distinct.tolist()[0]!r}; a classifier needs at least two classes")
    return labels


def _stacked(images: Sequence[Any]) -> np.ndarray:
    """A sequence of image arrays as one N×H×W(×C) array, refused when they differ in shape (images
    of many sizes are given as files, which are resized as they are read)."""
    first = images[0]
    for row, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise DataError(f"X: row {row} is a {type(image).__name__} among image arrays; give arrays only, "
                            f"or image paths only")
        if image.shape != first.shape:
            raise DataError(f"X: image arrays differ in size (row 0 is {'×'.join(map(str, first.shape))}, row "
                            f"{row} is {'×'.join(map(str, image.shape))}); give arrays of one size, or the images "
                            f"as files, which are resized as they are read")
    return np.stack(images)


def _items(X: Any, labels: np.ndarray | None, class_names: list[str]) -> Items:
    """Rows from an image array, a sequence of arrays of one size, or a sequence of image paths."""
    _row_count(X)
    if not isinstance(X, np.ndarray) and any(isinstance(image, np.ndarray) for image in X):
        X = _stacked(X)
    if isinstance(X, np.ndarray) and X.dtype != object:
        return Items.from_arrays(X, labels, class_names)
    paths = [str(path) for path in X]
    check_images(paths)
    label_array = np.full(len(paths), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return Items(ids=np.asarray([str(index) for index in range(len(paths))]), labels=label_array,
                 class_names=tuple(class_names), paths=np.asarray(paths))
