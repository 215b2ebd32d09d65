"""Predicting with a run: each stage's fold models soft-voted over streamed batches, then the
run's combiner. With `routed`, a specialist runs only on the images routed to it. A run folder is
only read here: a combiner that learns was fit when the run's last stage finished."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hierclf.combine.base import Combiner
from hierclf.data import Items
from hierclf.data.items import UNKNOWN_LABEL
from hierclf.data.tta import View, parse_view
from hierclf.errors import HierclfError, RunError, option
from hierclf.models.onnx_graph import checked_int8
from hierclf.hierarchy.stage import Stage
from hierclf.predict.onnx_engine import int8_rows
from hierclf.predict.output import Predictions
from hierclf.predict.stage_models import Inference, StageModels
from hierclf.run.calibration import Calibration
from hierclf.run.fitted import load_combiner
from hierclf.run.folder import Run
from hierclf.runtime.devices import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class PredictionSetup:
    """What predicting with a run uses besides its models and the images: the combiner (fitted,
    where it learns), the test-time views and the stages' calibration. `hierclf export` builds
    its graph from the same."""

    combiner: Combiner
    views: tuple[View, ...]
    calibration: Calibration

    @classmethod
    def of(cls, run: Run, combiner: str | None = None, tta: Sequence[str] | None = None) -> "PredictionSetup":
        """`combiner` by name (default: the recipe's combine.method), `tta` by view (None: the
        recipe's predict.tta); each refused naming where it was asked for."""
        combining = load_combiner(run, run.combiner(combiner))
        views = tuple(parse_view(text, option("tta")) for text in (run.recipe.predict.tta if tta is None else tta))
        return cls(combining, views, Calibration.of(run))


def predict_items(run: str | Path | Run, items: Items, combiner: str | None = None, folds: Sequence[int] | None = None,
                  trace: bool = False, inference: Inference = Inference()) -> Predictions:
    """Final labels for `items` by one run.

    Args:
        run: a run folder, or one already opened.
        items: the rows to predict (`load_input_items`, `Items.from_arrays`).
        combiner: how stage outputs become labels (default: the recipe's combine.method).
        folds: only these fold models vote, in every stage (to reproduce out-of-fold outputs).
        trace: add each stage's decision and confidence per row.
        inference: batch size, workers, device, test-time views and engine.

    Returns:
        Each row's final probabilities and label, its true label where the input had one, and
        how many images each specialist ran on."""
    run = _opened(run)
    hierarchy = run.hierarchy
    setup = PredictionSetup.of(run, combiner, inference.tta)
    if items.class_names and tuple(items.class_names) != hierarchy.class_names:
        raise RunError(f"the input's classes ({', '.join(items.class_names[:5])}…) are not this run's "
                       f"({', '.join(hierarchy.class_names[:5])}…)")
    device = resolve_device(inference.device)
    if inference.quantize:
        stages = _checked_int8(run, folds, inference, setup, device)
    else:
        stages = _load_stages(run, folds, inference, setup, device)
    return _predicted(run, setup, stages, items, trace)


_Stages = tuple[StageModels, dict[str, StageModels]]


def _load_stages(run: Run, folds: Sequence[int] | None, inference: Inference, setup: PredictionSetup,
                 device: torch.device, calibration: Items | None = None) -> _Stages:
    """The coarse stage's and each specialist's fold models."""
    def models(stage: Stage) -> StageModels:
        return StageModels(run, stage, device, folds, inference, setup.views, calibration)

    specialists = run.specialist_stages if setup.combiner.uses_specialists else {}
    return models(run.coarse_stage), {name: models(stage) for name, stage in specialists.items()}


def _predicted(run: Run, setup: PredictionSetup, stages: _Stages, items: Items, trace: bool) -> Predictions:
    """The stages on `items`, calibrated and combined."""
    hierarchy, calibration = run.hierarchy, setup.calibration
    coarse, specialists = stages
    coarse_probs = calibration.apply(run.coarse_stage, coarse.probs(items))
    outcome = setup.combiner.combine(hierarchy, coarse_probs, list(specialists), lambda name, rows: calibration.apply(
        run.specialist_stages[name], specialists[name].probs(items.subset(rows))))
    targets = np.full(len(items), UNKNOWN_LABEL, dtype=np.int64)
    known = items.labels != UNKNOWN_LABEL
    targets[known] = items.labels[known]
    decisions = hierarchy.trace(coarse_probs, outcome.specialist_probs) if trace else None
    return Predictions(ids=items.ids, probs=outcome.probs, labels=outcome.labels, class_names=hierarchy.class_names,
                       targets=targets, trace=decisions,
                       specialist_rows={name: int(len(rows)) for name, rows in outcome.ran_on.items()})


def _checked_int8(run: Run, folds: Sequence[int] | None, inference: Inference, setup: PredictionSetup,
                  device: torch.device) -> _Stages:
    """The stages in int8, calibrated on some of the run's training images and refused when,
    on others, the pipeline loses more than INT8_TOLERANCE macro-F1 points to the float one."""
    calibration, check = int8_rows(run)
    quantized = _load_stages(run, folds, inference, setup, device, calibration)
    coarse, specialists = quantized
    plain = coarse.in_float(), {name: stage.in_float() for name, stage in specialists.items()}
    float_f1, int8_f1 = checked_int8(check.labels, len(run.hierarchy.class_names), lambda int8: _predicted(
        run, setup, quantized if int8 else plain, check, False).labels, f"{option('quantize')} int8")
    log.info("int8: macro-F1 %.4f against the float graph's %.4f on %d training images", int8_f1, float_f1,
             len(check))
    return quantized


def predict_runs(runs: Sequence[str | Path | Run], items: Items, weights: Sequence[float] | None = None,
                 combiner: str | None = None, trace: bool = False, inference: Inference = Inference()) -> Predictions:
    """A soft vote of several runs (seeds, backbones, hierarchies) over the same classes.

    Args:
        runs: run folders, or runs already opened; with one, this is `predict_items`.
        items: the rows to predict.
        weights: each run's weight in the vote (default: equal).
        combiner: the combiner every run uses (default: each run's recipe's).
        trace: each stage's decisions per row; one run only.
        inference: batch size, workers, device and test-time views, for every run.

    Returns:
        The weighted mean of each run's final probabilities, and its labels."""
    if len(runs) == 1:
        return predict_items(runs[0], items, combiner, trace=trace, inference=inference)
    if weights is None:
        weights = [1.0] * len(runs)
    if len(weights) != len(runs):
        raise HierclfError(f"{option('weights')} has {len(weights)} numbers for {len(runs)} runs")
    if not all(np.isfinite(w) and w >= 0 for w in weights) or not 0 < sum(weights) < np.inf:
        raise HierclfError(f"{option('weights')}: expected finite numbers ≥ 0, not all 0; got "
                           f"{', '.join(f'{w:g}' for w in weights)}")
    if trace:
        raise HierclfError(f"{option('trace')} follows one run's stages; predict with one run to trace it")
    opened = [_opened(run) for run in runs]
    first = opened[0].hierarchy.class_names
    for run in opened[1:]:  # every check before any model runs
        if run.hierarchy.class_names != first:
            raise RunError(f"{run.root} predicts other classes than {opened[0].root}; an ensemble needs the same "
                           f"classes")
    total, results = None, []
    for run, weight in zip(opened, weights):
        result = predict_items(run, items, combiner, inference=inference)
        results.append(result)
        total = result.probs * weight if total is None else total + result.probs * weight
    probs = (total / sum(weights)).astype(np.float32)
    return Predictions(ids=items.ids, probs=probs, labels=probs.argmax(1), class_names=first,
                       targets=results[0].targets)


def _opened(run: str | Path | Run) -> Run:
    return run if isinstance(run, Run) else Run.open(run)
