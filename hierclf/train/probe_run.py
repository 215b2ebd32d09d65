"""The linear probe: a logistic regression on the frozen pretrained backbone's pooled features, on
a run's folds. It is what a careful user tries first on a few thousand images, it costs one
forward pass per image, and a fine-tuned run that does not beat it has gone wrong.

The probe is written as a flat run folder: each fold's model is the pretrained network as
loaded, its classifier replaced by the regression (the features' standardisation folded into
the weights), so `predict`, `evaluate --control` and `export` use it as any flat run, and its
out-of-fold outputs line up with the run's. `probe.json` beside recipe.toml marks it
(`Run.is_probe`).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from sklearn.metrics import log_loss

from hierclf.data import Items, load_training_items
from hierclf.data.cache import cached_items
from hierclf.data.images import check_images
from hierclf.errors import RecipeError, RunError, option
from hierclf.hierarchy.build import build_hierarchy, label_attributes
from hierclf.metrics import scores
from hierclf.models.factory import check_arch, create_model
from hierclf.models.probe import fit_probe, pooled_features, softmax
from hierclf.recipe.reading import load_recipe
from hierclf.recipe.finetuning import starts_pretrained
from hierclf.recipe.schema import CombineConfig, HierarchyConfig, Recipe
from hierclf.run.destinations import check_output, recipe_inputs
from hierclf.run.files import write_json
from hierclf.run.fold_files import read_history, read_result
from hierclf.run.folder import TRAIN_ONLY, Folds, Run
from hierclf.run.locks import holding
from hierclf.runtime.devices import resolve_device, thread_count, torch_threads
from hierclf.runtime.processes import Placement
from hierclf.train.checks import check_device
from hierclf.train.fold import FoldLoaders
from hierclf.train.kfold import split_rows
from hierclf.train.record import FitRecord
from hierclf.train.stage import gather_oof

log = logging.getLogger(__name__)

def linear_probe(source: str | Path, out: str | Path, c: float | None = None,
                 overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Fit the linear probe of a run (or of a recipe, before its run exists) into the run folder
    `out`: the recipe's [data], folds and [coarse] model at its input size, every class of the
    run (with heads, their joint classes).

    Args:
        source: a run folder (its folds are taken as they are) or a recipe file.
        out: the probe's run folder, a flat run.
        c: the regression's inverse regularisation strength, on standardised features; None
            chooses it in each fold (`fit_probe`).
        overrides: `section.key=value` changes of a recipe (as fit-coarse's --set).

    Returns:
        The probe's out-of-fold summary (summary.json)."""
    recipe, folds, where = _source(Path(source), overrides)
    config = recipe.coarse
    if not starts_pretrained(config):
        raise RecipeError(f"{where}: a linear probe reads a pretrained backbone's features, and [coarse] starts "
                          f"from scratch; set coarse.weights (a local file) or coarse.pretrained")
    check_arch(config.model, "coarse.model")
    check_device(config.device, "coarse")
    check_output(Path(out), option("out"), reads=[*recipe_inputs(recipe), Path(source)], folder=True, run=True)
    items = load_training_items(recipe.data, label_attributes(recipe.hierarchy), check_files=False)
    if folds is None:
        if items.paths is not None:
            check_images(items.paths, config.workers)
        folds = Folds(ids=items.ids, labels=items.labels, fold=split_rows(items, recipe.folds, recipe.data.source))
    else:
        folds.check_data(items.ids, items.labels, Path(source))
    flat = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, class_names=tuple(items.class_names)),
                               hierarchy=HierarchyConfig(), fine=config, specialists=(), heads=(),
                               combine=CombineConfig())
    run = Run.start(out, flat, build_hierarchy(flat.hierarchy, items.class_names), folds)
    with holding(run.stage_dir("coarse"), f"fitting the linear probe {out}", lock=".probe.lock"):
        _fit_folds(run, items, c)
    return gather_oof(run, run.coarse_stage, items)


def _source(path: Path, overrides: Sequence[str]) -> tuple[Recipe, Folds | None, str]:
    """The recipe a probe is fit for, the run's folds when `path` is a run folder, and what
    messages call it."""
    if path.is_dir():
        if overrides:
            raise RecipeError(f"{option('overrides')} changes a recipe; {path} is a run folder, probed as it was trained")
        run = Run.open(path)
        if run.is_probe:
            raise RunError(f"{path} is itself a linear probe; give the run it was fit for, or its recipe")
        return run.recipe, run.folds, str(run.recipe_path)
    return load_recipe(path, overrides), None, str(path)


def _fit_folds(run: Run, items: Items, c: float | None) -> None:
    """The features of every row once (the frozen backbone is the same in every fold), then one
    regression per unfinished fold, written as that fold's model (a finished one is kept, as
    fit-coarse keeps it)."""
    stage, config = run.coarse_stage, run.coarse_stage.config
    unfinished = [fold for fold in _folds(run) if not run.fold_finished("coarse", fold)]
    if not unfinished:
        return
    model, spec = create_model(config, stage.layout, key="coarse", seed=config.seed)
    classifier = model.get_classifier()
    if not isinstance(classifier, torch.nn.Linear):
        raise RecipeError(f"coarse.model = {config.model!r}: its classifier is a {type(classifier).__name__}, not a "
                          f"linear layer over pooled features; the probe needs one")
    targets = stage.targets(items.labels)[:, 0]
    placement = Placement(resolve_device(config.device))
    started = time.perf_counter()
    with torch_threads(thread_count(config.threads)):
        images = cached_items(items, config.img_size, config.in_chans, config.cache_mb, config.workers)
        loaders = FoldLoaders(stage, spec, images, stage.targets(items.labels), config.seed, placement)
        features, order = pooled_features(model.to(placement.device), loaders.of(np.arange(len(items))),
                                          placement.device, config.amp)
    features = features[np.argsort(order)]
    per_fold_seconds = (time.perf_counter() - started) / len(unfinished)
    for fold in unfinished:
        fold_started = time.perf_counter()
        train_rows = np.flatnonzero(run.folds.fold != fold)
        val_rows = np.flatnonzero(run.folds.fold == fold)
        weight, bias, chosen = fit_probe(features[train_rows], targets[train_rows], stage.layout.width, c)
        with torch.no_grad():
            classifier.weight.copy_(torch.from_numpy(weight))
            classifier.bias.copy_(torch.from_numpy(bias))
        entry = _fold_entry(features, targets, weight, bias, train_rows, val_rows)
        entry["seconds"] = per_fold_seconds + time.perf_counter() - fold_started
        record = FitRecord(f"probe fold {fold}", run.fold_dir("coarse", fold))
        record.resume_path.parent.mkdir(parents=True, exist_ok=True)
        record.metrics_path.unlink(missing_ok=True)  # a fold a killed probe began: its one line, once
        record.epoch(entry, True, 1)
        val_probs = softmax(features[val_rows] @ weight.T + bias)
        record.finish_fold(dict(ids=items.ids[val_rows], probs=val_probs.astype(np.float32),
                                targets=stage.layout.stored(stage.targets(items.labels)[val_rows])),
                           model.cpu(), spec, {**_result(fold, entry, len(train_rows), len(val_rows)), "C": chosen})
        model.to(placement.device)
    results = [read_result(run.fold_dir("coarse", fold)) for fold in _folds(run)]
    write_json(run.probe_path, {"C": [result.get("C") for result in results], "chosen": c is None,
                                "features": int(features.shape[1]), "rows": int(len(features)),
                                "seconds": sum(float(line.get("seconds", 0.0)) for fold in _folds(run)
                                               for line in read_history(run.fold_dir("coarse", fold)))})


def _folds(run: Run) -> list[int]:
    return sorted(set(run.folds.fold.tolist()) - {TRAIN_ONLY})


def _fold_entry(features: np.ndarray, targets: np.ndarray, weight: np.ndarray, bias: np.ndarray,
                train_rows: np.ndarray, val_rows: np.ndarray) -> dict[str, float]:
    """The fold's one line of metrics.jsonl, as an epoch's: the regression's log-loss and
    accuracy on its training rows, and its validation scores."""
    labels = np.arange(len(bias))
    train_probs = softmax(features[train_rows] @ weight.T + bias)
    val_probs = softmax(features[val_rows] @ weight.T + bias)
    val = scores(targets[val_rows], val_probs.argmax(1), len(bias))
    return {"epoch": 1, "train_loss": float(log_loss(targets[train_rows], train_probs, labels=labels)),
            "train_accuracy": float((train_probs.argmax(1) == targets[train_rows]).mean()),
            "val_loss": float(log_loss(targets[val_rows], val_probs, labels=labels)),
            "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "lr": 0.0}


def _result(fold: int, entry: dict[str, float], train_rows: int, val_rows: int) -> dict[str, Any]:
    return {"fold": fold, "best_epoch": 1, "epochs_run": 1, "stopped_early": False, "monitor": "val_macro_f1",
            "best_value": entry["val_macro_f1"], "val_accuracy": entry["val_accuracy"],
            "val_macro_f1": entry["val_macro_f1"], "train_rows": train_rows, "val_rows": val_rows,
            "train_accuracy": entry["train_accuracy"], "probe": True}

