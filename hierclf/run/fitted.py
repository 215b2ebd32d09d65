"""A run's combiners that learn, fit once on its out-of-fold outputs when its last stage
finishes, and kept in combiner.json with a fingerprint of what they were fit on; `predict` only
reads them, and refuses a state fit on anything else."""
from __future__ import annotations

import hashlib
import json
import logging

from hierclf.combine.base import Combiner
from hierclf.combine.registry import COMBINERS, applicable
from hierclf.errors import RunError
from hierclf.readback import ReadBack
from hierclf.run.calibration import fit_calibration, refit_remedy
from hierclf.run.files import read_json, write_text
from hierclf.run.folder import Run
from hierclf.run.outputs import load_oof, oof_complete

log = logging.getLogger(__name__)


def fit_combiners(run: Run) -> list[str]:
    """Fit the run's temperatures (with combine.calibrate), then every combiner of the run that
    learns, on its out-of-fold outputs, into combiner.json; returns their names (none until every
    stage has its out-of-fold file)."""
    if not oof_complete(run):
        return []
    if run.recipe.combine.calibrate:
        fit_calibration(run)  # first: the combiners are fit on the calibrated outputs
    learning = [name for name in applicable(run.hierarchy) if COMBINERS[name].fits]
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
    refit = refit_remedy(run)
    check = ReadBack(str(run.combiner_path), f"delete it and {refit} again")
    saved = check.table(read_json(run.combiner_path), "the file").get(name) if run.combiner_path.exists() else None
    if saved is None or check.table(saved, name).get("fit_on") != _fingerprint(run, combiner):
        state = "is not fit yet" if saved is None else "was fit on other out-of-fold outputs or settings"
        raise RunError(f"{run.root}: the {name} combiner {state}; {refit}")
    return combiner.load_state(check.table(check.field(saved, "state", name), f"{name}.state"), check, run.hierarchy)


def _fingerprint(run: Run, combiner: Combiner) -> str:
    """What a fitted combiner depends on: its settings and every stage's out-of-fold file."""
    digest = hashlib.sha256(json.dumps(combiner.settings(), sort_keys=True).encode())
    if run.recipe.combine.calibrate:  # fit on calibrated outputs: the temperatures are part of its input
        digest.update(run.calibration_path.read_bytes() if run.calibration_path.exists() else b"uncalibrated")
    for stage in run.stages:
        path = run.oof_path(stage.name)
        digest.update(path.read_bytes() if path.exists() else b"missing")
    return digest.hexdigest()
