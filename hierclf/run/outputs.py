"""A run's out-of-fold outputs, every stage aligned on the same rows: what `evaluate` scores and
what the combiners that learn are fit on, once, when the run's last stage finishes."""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import numpy as np

from hierclf.run.calibration import calibrated, fit_calibration
from hierclf.combine.combiners import COMBINERS, Combiner, StageOutputs
from hierclf.errors import RunError
from hierclf.run.files import read_json, read_npz, write_text
from hierclf.run.folder import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class RunOOF:
    """Out-of-fold rows of a run: ids, fine labels, fold, and each stage's probabilities."""

    ids: np.ndarray
    folds: np.ndarray
    outputs: StageOutputs

    @property
    def labels(self) -> np.ndarray:
        return self.outputs.labels

    @property
    def coarse_probs(self) -> np.ndarray:
        return self.outputs.coarse_probs

    @property
    def specialist_probs(self) -> dict[str, np.ndarray]:
        return self.outputs.specialist_probs


def load_oof(run: Run) -> RunOOF:
    """Every stage's out-of-fold probabilities: the coarse stage's, and each specialist's."""
    coarse = _stage_oof(run, "coarse", "fit-coarse")
    coarse["probs"] = calibrated(run, run.coarse_stage, coarse["probs"])
    label_of = dict(zip(run.folds.ids.tolist(), run.folds.labels.tolist()))
    labels = np.asarray([label_of[i] for i in coarse["ids"].tolist()], dtype=np.int64)
    specialists = {}
    for name, stage in run.specialist_stages.items():
        oof = _stage_oof(run, stage.name, f"fit-fine (specialist {name!r})")
        if not np.array_equal(oof["ids"], coarse["ids"]):
            raise RunError(f"{run.stage_dir(stage.name)}/oof.npz covers other rows than the coarse stage's; "
                           f"retrain that specialist")
        specialists[name] = calibrated(run, stage, oof["probs"])
    return RunOOF(ids=coarse["ids"], folds=coarse["fold"], outputs=StageOutputs(coarse["probs"], specialists, labels))


def oof_complete(run: Run) -> bool:
    """Whether every stage of the run has its out-of-fold file."""
    return all(run.oof_path(stage.name).exists() for stage in run.stages)


def fit_combiners(run: Run) -> list[str]:
    """Fit every combiner of the run that learns, on its out-of-fold outputs, into combiner.json;
    returns their names (none until every stage has its out-of-fold file)."""
    if not oof_complete(run):
        return []
    if run.recipe.combine.calibrate:
        fit_calibration(run)  # first: the combiners are fit on the calibrated outputs
    learning = [name for name in run.hierarchy.combiners if COMBINERS[name].fits]
    if not learning:
        return []
    oof = load_oof(run)
    payload = {}
    for name in learning:
        combiner = COMBINERS[name].from_config(run.recipe.combine).fit(run.hierarchy, oof.outputs)
        payload[name] = {"fit_on": _fingerprint(run, combiner), "state": combiner.state()}
    write_text(run.combiner_path, json.dumps(payload) + "\n")  # compact: the coefficients are long lists
    log.info("fit the %s combiner%s on %d out-of-fold rows", ", ".join(learning), "s" if len(learning) > 1 else "",
             len(oof.ids))
    return learning


def load_combiner(run: Run, name: str) -> Combiner:
    """The run's combiner `name`, as the recipe sets it up; one that learns comes fitted from
    combiner.json, which must have been fit on the run's present out-of-fold files."""
    combiner = COMBINERS[name].from_config(run.recipe.combine)
    if not combiner.fits:
        return combiner
    saved = read_json(run.combiner_path).get(name) if run.combiner_path.exists() else None
    if saved is None or saved.get("fit_on") != _fingerprint(run, combiner):
        state = "is not fit yet" if saved is None else "was fit on other out-of-fold outputs or settings"
        raise RunError(f"{run.root}: the {name} combiner {state}; run `hierclf fit-fine {run.root}` (or fit-coarse, "
                       f"for a run without specialists) to fit it")
    return combiner.load_state(saved["state"], str(run.combiner_path))


def _fingerprint(run: Run, combiner: Combiner) -> str:
    """What a fitted combiner depends on: its settings and every stage's out-of-fold file."""
    digest = hashlib.sha256(json.dumps(combiner.settings(), sort_keys=True).encode())
    if run.recipe.combine.calibrate:  # fit on calibrated outputs: the temperatures are part of its input
        digest.update(run.calibration_path.read_bytes() if run.calibration_path.exists() else b"uncalibrated")
    for stage in run.stages:
        path = run.oof_path(stage.name)
        digest.update(path.read_bytes() if path.exists() else b"missing")
    return digest.hexdigest()


def _stage_oof(run: Run, stage: str, command: str) -> dict[str, np.ndarray]:
    if not run.oof_path(stage).exists():
        raise RunError(f"{run.root}: the {stage} stage has no out-of-fold file yet; run `hierclf {command}` "
                       f"until every fold is trained")
    return read_npz(run.oof_path(stage))
