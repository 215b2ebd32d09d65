"""Predicting with a run: each stage's fold models soft-voted over streamed batches, then the
run's combiner. With `routed`, a specialist runs only on the images routed to it. A run folder is
only read here: a combiner that learns was fit when the run's last stage finished."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hierclf.run.calibration import calibrated
from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.data.items import UNKNOWN_LABEL
from hierclf.runtime.devices import resolve_device
from hierclf.errors import HierclfError, InUseError, RunError
from hierclf.run.files import holding, write_text
from hierclf.models.inference import soft_vote
from hierclf.models.factory import ModelSpec, load_model
from hierclf.run.outputs import load_combiner
from hierclf.run.folder import Run
from hierclf.hierarchy.stage import Stage
from hierclf.data.tta import View, parse_view

log = logging.getLogger(__name__)


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

    def __init__(self, run: Run, stage: Stage, device: torch.device, folds: Sequence[int] | None,
                 batch_size: int, workers: int, tta: Sequence[View] = ()):
        finished = run.finished_folds(stage.name)
        wanted = finished if folds is None else [fold for fold in folds if fold in finished]
        if not wanted:
            among = "" if folds is None else f" among {list(folds)}"
            raise RunError(f"{run.root} has no trained {stage.name} fold{among}; "
                           f"run `hierclf fit-{'coarse' if stage.name == 'coarse' else 'fine'}` first")
        if folds is None and len(wanted) < run.recipe.folds.count:
            log.warning("%s: using %d of %d folds (the others are not trained yet)", stage.name, len(wanted),
                        run.recipe.folds.count)
        loaded = [load_model(run.fold_dir(stage.name, fold), device) for fold in wanted]
        specs = {spec for _, spec in loaded}
        if len(specs) != 1:
            raise RunError(f"{run.stage_dir(stage.name)}: the fold models differ in input size or classes")
        self.models = [model for model, _ in loaded]
        self.spec: ModelSpec = specs.pop()
        self.device, self.batch_size, self.workers, self.tta = device, batch_size, workers, tuple(tta)

    def probs(self, items: Items) -> np.ndarray:
        if len(items) == 0:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        transform = build_transform(self.spec.img_size, self.spec.mean, self.spec.std)
        dataset = ImageDataset(items, None, transform, self.spec.in_chans)
        loader = make_loader(dataset, self.batch_size, shuffle=False, workers=self.workers, device=self.device)
        probs, rows = soft_vote(self.models, loader, self.device, self.spec.layout, tta=self.tta)
        return probs[np.argsort(rows)]


def predict_items(run: str | Path | Run, items: Items, combiner: str | None = None, batch_size: int = 256,
                  workers: int = 2, device: str = "auto", folds: Sequence[int] | None = None,
                  trace: bool = False, tta: Sequence[str] | None = None) -> Predictions:
    """Final labels for `items` by `run` (a run folder, or one already opened). `combiner`
    defaults to the recipe's [combine] method; `folds` limits every stage to those fold models
    (to reproduce out-of-fold outputs); `tta` (hflip, rot90, scale=1.1, …) defaults to the
    recipe's predict.tta, and () turns it off."""
    run = _opened(run)
    hierarchy = run.hierarchy
    requested = combiner or run.recipe.combine.method
    where = f"--combiner {requested!r}" if combiner else f'{run.recipe_path}: combine.method = "{requested}"'
    combining = load_combiner(run, hierarchy.combiner_for(requested, where))
    if items.class_names and tuple(items.class_names) != hierarchy.class_names:
        raise RunError(f"the input's classes ({', '.join(items.class_names[:5])}…) are not this run's "
                       f"({', '.join(hierarchy.class_names[:5])}…)")
    views = [parse_view(text, "--tta") for text in (run.recipe.predict.tta if tta is None else tta)]
    torch_device = resolve_device(device)

    def models(stage: Stage) -> StageModels:
        return StageModels(run, stage, torch_device, folds, batch_size, workers, views)

    coarse = models(run.coarse_stage)
    specialists = {name: models(stage) for name, stage in run.specialist_stages.items()}
    coarse_probs = calibrated(run, run.coarse_stage, coarse.probs(items))
    outcome = combining.combine(hierarchy, coarse_probs, list(specialists), lambda name, rows: calibrated(
        run, run.specialist_stages[name], specialists[name].probs(items.subset(rows))))
    targets = np.full(len(items), UNKNOWN_LABEL, dtype=np.int64)
    known = items.labels != UNKNOWN_LABEL
    targets[known] = items.labels[known]
    decisions = hierarchy.trace(coarse_probs, outcome.specialist_probs) if trace else None
    return Predictions(ids=items.ids, probs=outcome.probs, labels=outcome.labels, class_names=hierarchy.class_names,
                       targets=targets, trace=decisions,
                       specialist_rows={name: int(len(rows)) for name, rows in outcome.ran_on.items()})


def predict_runs(run_paths: Sequence[str | Path | Run], items: Items, weights: Sequence[float] | None = None,
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
    runs = [_opened(run) for run in run_paths]
    first = runs[0].hierarchy.class_names
    for run in runs[1:]:  # every check before any model runs
        if run.hierarchy.class_names != first:
            raise RunError(f"{run.root} predicts other classes than {runs[0].root}; an ensemble needs the same classes")
    total, results = None, []
    for run, weight in zip(runs, weights):
        result = predict_items(run, items, **options)
        results.append(result)
        total = result.probs * weight if total is None else total + result.probs * weight
    probs = (total / sum(weights)).astype(np.float32)
    return Predictions(ids=items.ids, probs=probs, labels=probs.argmax(1), class_names=first,
                       targets=results[0].targets)


def _opened(run: str | Path | Run) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


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


def shard_part(out: Path, shard: int, shards: int) -> Path:
    """Where shard `shard` of `shards` writes its rows: OUT.part-<shard>-of-<shards>."""
    return out.with_name(f"{out.name}.part-{shard}-of-{shards}")


def merge_shards(out: Path, shards: int) -> bool:
    """Once every shard's part exists, join them into `out` in input order (shard i holds rows
    i, i + n, i + 2n, …) and delete the parts; True when this call merged them. Shards that
    finish together race here: one holds the join (a lock beside `out`), the others leave it."""
    parts = [shard_part(out, shard, shards) for shard in range(shards)]
    if not all(part.exists() for part in parts):
        return False
    try:
        with holding(out.parent, f"joining the shards of {out}", lock=f".{out.name}.joining"):
            if not all(part.exists() for part in parts):
                return False  # another shard has joined them meanwhile
            lines = [part.read_text(encoding="utf-8").splitlines(keepends=True) for part in parts]
            header, bodies = lines[0][0], [part_lines[1:] for part_lines in lines]
            total = sum(len(body) for body in bodies)
            write_text(out, "".join([header] + [bodies[row % shards][row // shards] for row in range(total)]))
            for part in parts:
                part.unlink(missing_ok=True)
    except InUseError:
        return False  # another shard is joining them now
    return True
