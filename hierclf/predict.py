"""Predicting with a run: every fold model of a stage, soft-voted, over streamed batches."""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.data.items import UNKNOWN_LABEL
from hierclf.devices import resolve_device
from hierclf.errors import RunError
from hierclf.inference import soft_vote
from hierclf.models import ModelSpec, load_model
from hierclf.runs import RunDir, write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Predictions:
    """Probabilities per row over `class_names`, and the true labels where the input had them."""

    ids: np.ndarray
    probs: np.ndarray
    class_names: tuple[str, ...]
    targets: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def has_targets(self) -> bool:
        return len(self.targets) > 0 and bool((self.targets != UNKNOWN_LABEL).all())


def load_stage_models(run: RunDir, stage: str, device: torch.device) -> tuple[list[torch.nn.Module], ModelSpec]:
    """The finished fold models of one stage; all must share one input specification."""
    folds = run.finished_folds(stage)
    if not folds:
        raise RunError(f"{run.root} has no trained {stage} fold; run `hierclf fit-{stage}` first")
    expected = int(run.recipe().folds.count)
    if len(folds) < expected:
        log.warning("%s: using %d of %d folds (the others are not trained yet)", stage, len(folds), expected)
    loaded = [load_model(run.fold_dir(stage, fold), device) for fold in folds]
    specs = {spec for _, spec in loaded}
    if len(specs) != 1:
        raise RunError(f"{run.stage_dir(stage)}: the fold models differ in input size or classes")
    return [model for model, _ in loaded], specs.pop()


def predict_items(run_path: str | Path, items: Items, batch_size: int = 256, workers: int = 2,
                  device: str = "auto") -> Predictions:
    """Soft vote of the coarse stage's fold models over `items`. For a flat run its classes are
    the final classes; for a grouped run, a group comes out under the group's name."""
    run = RunDir(run_path)
    hierarchy = run.hierarchy()
    if tuple(items.class_names) and tuple(items.class_names) != hierarchy.class_names:
        raise RunError(f"the input's classes ({', '.join(items.class_names[:5])}…) are not this run's "
                       f"({', '.join(hierarchy.class_names[:5])}…)")
    torch_device = resolve_device(device)
    models, spec = load_stage_models(run, "coarse", torch_device)
    transform = build_transform(spec.img_size, spec.mean, spec.std)
    dataset = ImageDataset(items, None, transform, spec.in_chans)
    loader = make_loader(dataset, batch_size, shuffle=False, workers=workers, device=torch_device)
    probs, rows = soft_vote(models, loader, torch_device)
    order = np.argsort(rows)
    known = items.labels != UNKNOWN_LABEL
    targets = np.full(len(items), UNKNOWN_LABEL, dtype=np.int64)
    targets[known] = hierarchy.coarse_targets(items.labels[known])
    return Predictions(ids=items.ids, probs=probs[order].reshape(len(items), -1), class_names=spec.class_names,
                       targets=targets)


def write_predictions(path: Path, predictions: Predictions, with_probs: bool = False) -> None:
    """`id,label` (class names), plus one probability column per class with `with_probs`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["id", "label"] + ([f"prob_{name}" for name in predictions.class_names] if with_probs else [])
    writer.writerow(header)
    for image_id, label, probs in zip(predictions.ids, predictions.predicted, predictions.probs):
        row = [image_id, predictions.class_names[label]]
        if with_probs:
            row += [f"{p:.6f}" for p in probs]
        writer.writerow(row)
    write_text(path, buffer.getvalue())
