"""Predicting with a run: each stage's fold models soft-voted over streamed batches, then the
combiner. With `routed`, a specialist runs only on the images routed to it; with attribute
heads, the heads' probabilities (a head specialist's in place of its head's) multiply."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hierclf.combine import product, routed, stacking_features
from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.data.items import UNKNOWN_LABEL
from hierclf.devices import resolve_device
from hierclf.errors import HierclfError, RunError
from hierclf.hierarchy import FactorHierarchy, Hierarchy
from hierclf.inference import TTAVariant, soft_vote
from hierclf.models import ModelSpec, load_model
from hierclf.oof import stacking_for_run
from hierclf.recipe import tta_variant
from hierclf.runs import RunDir, write_text

log = logging.getLogger(__name__)

COMBINERS = ("product", "routed", "stacking")


@dataclass(frozen=True, eq=False)
class Predictions:
    """Final-class probabilities and labels per row, the true labels where the input had them,
    and with `trace`, each stage's decision per row."""

    ids: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    targets: np.ndarray
    trace: dict[str, np.ndarray] | None = None
    specialist_rows: dict[str, int] | None = None

    @property
    def has_targets(self) -> bool:
        return len(self.targets) > 0 and bool((self.targets != UNKNOWN_LABEL).all())


class StageModels:
    """The fold models of one stage, loaded once, soft-voting over any subset of rows."""

    def __init__(self, run: RunDir, stage: str, device: torch.device, folds: Sequence[int] | None,
                 expected_folds: int, batch_size: int, workers: int, tta: Sequence[TTAVariant] = ()):
        finished = run.finished_folds(stage)
        wanted = finished if folds is None else [fold for fold in folds if fold in finished]
        if not wanted:
            raise RunError(f"{run.root} has no trained {stage} fold{'' if folds is None else f' among {list(folds)}'}; "
                           f"run `hierclf fit-{'coarse' if stage == 'coarse' else 'fine'}` first")
        if folds is None and len(wanted) < expected_folds:
            log.warning("%s: using %d of %d folds (the others are not trained yet)", stage, len(wanted),
                        expected_folds)
        loaded = [load_model(run.fold_dir(stage, fold), device) for fold in wanted]
        specs = {spec for _, spec in loaded}
        if len(specs) != 1:
            raise RunError(f"{run.stage_dir(stage)}: the fold models differ in input size or classes")
        self.models = [model for model, _ in loaded]
        self.spec: ModelSpec = specs.pop()
        self.device, self.batch_size, self.workers, self.tta = device, batch_size, workers, tuple(tta)

    def probs(self, items: Items) -> np.ndarray:
        if len(items) == 0:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        transform = build_transform(self.spec.img_size, self.spec.mean, self.spec.std)
        dataset = ImageDataset(items, None, transform, self.spec.in_chans)
        loader = make_loader(dataset, self.batch_size, shuffle=False, workers=self.workers, device=self.device)
        probs, rows = soft_vote(self.models, loader, self.device, head_sizes=self.spec.head_sizes, tta=self.tta)
        return probs[np.argsort(rows)]


def predict_items(run_path: str | Path, items: Items, combiner: str | None = None, batch_size: int = 256,
                  workers: int = 2, device: str = "auto", folds: Sequence[int] | None = None,
                  trace: bool = False, tta: Sequence[str] | None = None) -> Predictions:
    """Final labels for `items`. `combiner` defaults to the recipe's [combine] method; `folds`
    limits every stage to those fold models (to reproduce out-of-fold outputs); `tta` (hflip,
    rot90, scale=1.1, …) defaults to the recipe's predict.tta, and () turns it off."""
    run = RunDir(run_path)
    recipe, hierarchy = run.recipe(), run.hierarchy()
    method = combiner or recipe.combine.method
    if method not in COMBINERS:
        raise HierclfError(f"--combiner {method!r}: expected one of {', '.join(COMBINERS)}")
    if method == "routed" and isinstance(hierarchy, FactorHierarchy):
        raise HierclfError(f"--combiner routed: {run.root} has attribute heads, and there is nothing to route; "
                           f"use product or stacking")
    if items.class_names and tuple(items.class_names) != hierarchy.class_names:
        raise RunError(f"the input's classes ({', '.join(items.class_names[:5])}…) are not this run's "
                       f"({', '.join(hierarchy.class_names[:5])}…)")
    variants = [tta_variant(text, "--tta") for text in (recipe.predict.tta if tta is None else tta)]
    torch_device = resolve_device(device)

    def stage(name: str) -> StageModels:
        return StageModels(run, name, torch_device, folds, recipe.folds.count, batch_size, workers, variants)

    coarse_probs = stage("coarse").probs(items)
    targets = np.full(len(items), UNKNOWN_LABEL, dtype=np.int64)
    known = items.labels != UNKNOWN_LABEL
    targets[known] = items.labels[known]
    if hierarchy.is_flat:
        return Predictions(ids=items.ids, probs=coarse_probs, labels=coarse_probs.argmax(1),
                           class_names=hierarchy.class_names, targets=targets,
                           trace=_trace(hierarchy, coarse_probs, {}) if trace else None)

    specialists = {part.name: stage(run.specialist_stage(part))
                   for part in hierarchy.specialist_parts(recipe.specialist_names)}
    if method == "routed":
        outcome = routed(hierarchy, coarse_probs,
                         lambda name, rows: specialists[name].probs(items.subset(rows)),
                         threshold=recipe.combine.route_threshold)
        local, probs, labels = outcome.specialist_probs, outcome.probs, outcome.labels
        ran = {name: int(len(rows)) for name, rows in outcome.ran_on.items()}
    else:
        local = {name: models.probs(items) for name, models in specialists.items()}
        if method == "product":
            probs = product(hierarchy, coarse_probs, local)
        else:
            stacking = stacking_for_run(run, recipe.combine.stacking_c)
            probs = stacking.predict_proba(stacking_features(hierarchy, coarse_probs, local))
        labels = probs.argmax(1)
        ran = {name: len(items) for name in specialists}
    return Predictions(ids=items.ids, probs=probs, labels=labels, class_names=hierarchy.class_names,
                       targets=targets, trace=_trace(hierarchy, coarse_probs, local) if trace else None,
                       specialist_rows=ran)


def predict_runs(run_paths: Sequence[str | Path], items: Items, weights: Sequence[float] | None = None,
                 **options) -> Predictions:
    """A soft vote of several runs (seeds, backbones, hierarchies) over the same classes: each
    run's final probabilities, by its own combiner, averaged with `weights` (default equal).
    `options` go to `predict_items` for every run."""
    if len(run_paths) == 1:
        return predict_items(run_paths[0], items, **options)
    if weights is None:
        weights = [1.0] * len(run_paths)
    if len(weights) != len(run_paths):
        raise HierclfError(f"--weights has {len(weights)} numbers for {len(run_paths)} runs")
    if any(w < 0 for w in weights) or not sum(weights) > 0:
        raise HierclfError(f"--weights: expected numbers ≥ 0, not all 0; got {', '.join(f'{w:g}' for w in weights)}")
    if options.get("trace"):
        raise HierclfError("--trace follows one run's stages; predict with one run to trace it")
    first = RunDir(run_paths[0]).hierarchy().class_names
    for path in run_paths[1:]:  # every check before any model runs
        if RunDir(path).hierarchy().class_names != first:
            raise RunError(f"{path} predicts other classes than {run_paths[0]}; an ensemble needs the same classes")
    total, results = None, []
    for path, weight in zip(run_paths, weights):
        result = predict_items(path, items, **options)
        results.append(result)
        total = result.probs * weight if total is None else total + result.probs * weight
    probs = (total / sum(weights)).astype(np.float32)
    return Predictions(ids=items.ids, probs=probs, labels=probs.argmax(1), class_names=first,
                       targets=results[0].targets)


def _trace(hierarchy: Hierarchy, coarse_probs: np.ndarray, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per row: the coarse decision and its confidence; where that decision is a group, its
    specialist's decision and confidence (empty where the specialist did not run). With heads,
    each head's value, its probability, and which stage decided it."""
    if isinstance(hierarchy, FactorHierarchy):
        return _head_trace(hierarchy, coarse_probs, local)
    top = coarse_probs.argmax(1)
    names = np.asarray(hierarchy.coarse_names, dtype=object)
    specialist = np.full(len(top), "", dtype=object)
    specialist_label = np.full(len(top), "", dtype=object)
    specialist_confidence = np.full(len(top), np.nan)
    for group in hierarchy.groups:
        rows = np.flatnonzero(top == hierarchy.coarse_index(group))
        probs = local.get(group.name)
        if probs is None or len(rows) == 0:
            continue
        rows = rows[~np.isnan(probs[rows]).any(1)]
        specialist[rows] = group.name
        specialist_label[rows] = [hierarchy.class_names[group.members[i]] for i in probs[rows].argmax(1)]
        specialist_confidence[rows] = probs[rows].max(1)
    return {"coarse": names[top], "coarse_confidence": coarse_probs.max(1), "specialist": specialist,
            "specialist_label": specialist_label, "specialist_confidence": specialist_confidence}


def _head_trace(hierarchy: FactorHierarchy, coarse_probs: np.ndarray,
                local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    columns: dict[str, np.ndarray] = {}
    for name, probs in {**hierarchy.split(coarse_probs), **local}.items():
        values = np.asarray(hierarchy.head(name).values, dtype=object)
        columns[name] = values[probs.argmax(1)]
        columns[f"{name}_confidence"] = probs.max(1)
        columns[f"{name}_by"] = np.full(len(probs), "specialist" if name in local else "coarse", dtype=object)
    return columns


def write_predictions(path: Path, predictions: Predictions, with_probs: bool = False, label_index: bool = False) -> None:
    """`id,label` (class names, or with `label_index` class indices); with `with_probs` one
    probability column per class; with a trace, the stage decisions behind each label."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    trace = predictions.trace or {}
    header = ["id", "label"] + ([f"prob_{name}" for name in predictions.class_names] if with_probs else [])
    writer.writerow(header + list(trace))
    for row, (image_id, label) in enumerate(zip(predictions.ids, predictions.labels)):
        values = [image_id, int(label) if label_index else predictions.class_names[label]]
        if with_probs:
            values += [f"{p:.6f}" for p in predictions.probs[row]]
        for column in trace.values():
            value = column[row]
            values.append("" if isinstance(value, float) and np.isnan(value) else
                          f"{value:.6f}" if isinstance(value, (float, np.floating)) else value)
        writer.writerow(values)
    write_text(path, buffer.getvalue())
