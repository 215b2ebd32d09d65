"""Temperature scaling (Guo et al. 2017) of each stage, fit on its out-of-fold outputs.

A stage's probabilities p become softmax(log p / T) per output block, one temperature T per
block, chosen to minimise the negative log-likelihood of the stage's own out-of-fold rows (each
predicted by a model that never trained on it, so the fit is leak-free). T > 1 softens an
over-confident stage, T < 1 sharpens a timid one; the argmax never changes. With
`combine.calibrate = true` the temperatures are fit when the run's last stage finishes, kept in
calibration.json with a fingerprint of the out-of-fold files, and applied wherever a stage's
outputs are used: the combiners' fit, `evaluate` and `predict`.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from hierclf.errors import RunError
from hierclf.run.files import read_json, read_npz, write_text
from hierclf.hierarchy.layout import OutputLayout
from hierclf.metrics import calibration as calibration_scores
from hierclf.run.folder import Run
from hierclf.hierarchy.stage import NOT_IN_STAGE, Stage


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(1, keepdims=True)


def fit_temperature(probs: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (0.05 to 20) that minimises the negative log-likelihood of `targets`."""
    rows = np.arange(len(targets))

    def nll(log_temperature: float) -> float:
        return float(-np.log(np.clip(scaled(probs, np.exp(log_temperature))[rows, targets], 1e-15, 1.0)).mean())

    found = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(found.x))


def apply(layout: OutputLayout, probs: np.ndarray, temperatures: list[float]) -> np.ndarray:
    """A stage's probabilities with each block scaled by its temperature."""
    blocks = layout.split(np.asarray(probs, dtype=np.float64))
    return np.concatenate([scaled(block, t) for block, t in zip(blocks, temperatures)], axis=1).astype(np.float32)


def fit_calibration(run: Run) -> None:
    """Fit every stage's temperatures on its out-of-fold file and write calibration.json."""
    payload = {stage.name: {"temperatures": [fit_temperature(probs, targets)
                                             for _, probs, targets in _blocks(run, stage)],
                            "fit_on": _fingerprint(run, stage)}
               for stage in run.stages}
    write_text(run.calibration_path, json.dumps(payload, indent=2) + "\n")


def calibration_report(run: Run) -> dict[str, Any]:
    """Per stage and output block: the temperature, and the out-of-fold NLL and ECE before and
    after it (empty when the recipe does not calibrate)."""
    report = {}
    for stage in run.stages:
        found = temperatures(run, stage)
        if found is None:
            return {}
        report[stage.name] = {block.name: {"temperature": t, "before": calibration_scores(targets, probs),
                                           "after": calibration_scores(targets, scaled(probs, t))}
                              for (block, probs, targets), t in zip(_blocks(run, stage), found)}
    return report


def _blocks(run: Run, stage: Stage):
    """Each output block of the stage's out-of-fold file: its probabilities and targets on the
    stage's own rows."""
    oof = read_npz(run.oof_path(stage.name))
    targets = stage.layout.columns(oof["targets"])
    for column, (block, probs) in enumerate(zip(stage.layout.blocks, stage.layout.split(oof["probs"]))):
        rows = targets[:, column] != NOT_IN_STAGE
        yield block, probs[rows], targets[rows, column]


def temperatures(run: Run, stage: Stage) -> list[float] | None:
    """The stage's temperatures when the recipe calibrates (None when it does not), refused when
    calibration.json is missing or was fit on other out-of-fold outputs."""
    if not run.recipe.combine.calibrate:
        return None
    saved = read_json(run.calibration_path).get(stage.name) if run.calibration_path.exists() else None
    if saved is None or saved.get("fit_on") != _fingerprint(run, stage):
        state = "is not fit yet" if saved is None else "was fit on other out-of-fold outputs"
        raise RunError(f"{run.root}: the calibration of stage {stage.name} {state}; run `hierclf fit-fine "
                       f"{run.root}` (or fit-coarse, for a run without specialists) to fit it")
    return [float(t) for t in saved["temperatures"]]


def calibrated(run: Run, stage: Stage, probs: np.ndarray) -> np.ndarray:
    """A stage's probabilities as the run uses them: temperature-scaled when the recipe says so."""
    found = temperatures(run, stage)
    return probs if found is None else apply(stage.layout, probs, found)


def _fingerprint(run: Run, stage: Stage) -> str:
    path = run.oof_path(stage.name)
    return hashlib.sha256(path.read_bytes() if path.exists() else b"missing").hexdigest()
