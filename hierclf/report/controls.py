"""Scores of label predictions as a report shows them, and flat runs on the same folds scored
beside a run: the flat run it is compared against, and budget-matched controls (one run with
more epochs, or several seeds scored as one out-of-fold ensemble)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hierclf.errors import RunError
from hierclf.metrics import calibration, confusion, most_confused, paired_difference, per_class, scores
from hierclf.report.costs import inference_cost, training_cost
from hierclf.run.folder import Run
from hierclf.run.outputs import RunOOF, stage_oof


def pipeline_scores(targets: np.ndarray, predicted: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1, each class's precision, recall and F1, and the most confused pairs."""
    result: dict[str, Any] = scores(targets, predicted, len(names))
    result["per_class"] = per_class(targets, predicted, names)
    result["most_confused"] = most_confused(confusion(targets, predicted, len(names)), names)
    return result


def flat_runs_scores(run: Run, paths: Sequence[str | Path], oof: RunOOF, option: str,
                     chosen: np.ndarray) -> dict[str, Any]:
    """One or more flat runs on `run`'s rows and folds, their out-of-fold probabilities averaged
    (each row is still predicted only by models that never trained on it): scores and cost. With
    several runs, `ensemble_gain` is the ensemble's macro-F1 minus its members' mean.
    `paired_difference` is the macro-F1 of the run's `chosen` pipeline (its out-of-fold labels)
    minus theirs, with its paired-bootstrap interval (seeded by folds.seed). `option` names the
    option that gave them, in messages."""
    names, labels = run.hierarchy.class_names, oof.labels
    probs, members, trained, inference, probes = [], [], [], [], []
    for path in paths:
        flat = Run.open(path)
        if not flat.hierarchy.is_flat:
            raise RunError(f"{option} {flat.root}: that run has {flat.hierarchy.describe()}; compare against a "
                           f"flat run")
        if not run.folds.matches(flat.folds):
            raise RunError(f"{option} {flat.root}: it was split into other folds (different data, folds.count or "
                           f"folds.seed); compare runs made with the same [data] and [folds]")
        flat_oof = stage_oof(flat, flat.coarse_stage, "fit-coarse") if flat.oof_path("coarse").exists() else None
        if flat_oof is None or not np.array_equal(flat_oof["ids"], oof.ids):
            raise RunError(f"{option} {flat.root}: its out-of-fold file is missing or incomplete; finish fit-coarse "
                           f"there")
        probs.append(flat_oof["probs"].astype(np.float64))
        members.append(scores(labels, flat_oof["probs"].argmax(1), len(names))["macro_f1"])
        trained.append(training_cost(flat))
        inference.append(inference_cost(flat))
        probes.append(flat.is_probe)
    predicted = np.mean(probs, axis=0).argmax(1)
    result = pipeline_scores(labels, predicted, names)
    result.update(calibration(labels, np.mean(probs, axis=0)))
    result["paired_difference"] = paired_difference(labels, chosen, predicted, len(names), seed=run.recipe.folds.seed)
    result.update(runs=[str(Path(path)) for path in paths],
                  training=_summed(trained, ("images", "megapixels", "seconds")),
                  inference=_summed(inference, ("passes", "megapixels")))
    if len(paths) == 1:
        result["run"] = str(Path(paths[0]))
        result["probe"] = probes[0]  # a linear probe (`hierclf probe`): the verdict names it
    else:
        result["members_macro_f1"] = members
        result["ensemble_gain"] = result["macro_f1"] - float(np.mean(members))
    return result


def _summed(costs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """The costs of several runs, added key by key (an ensemble costs all of its runs)."""
    return {key: float(sum(cost[key] for cost in costs)) for key in keys}
