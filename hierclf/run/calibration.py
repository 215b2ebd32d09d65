"""A run's temperature scaling: one temperature per stage and output block, fit on the stage's
out-of-fold outputs (`hierclf.combine.temperature`) when the run's last stage finishes, kept in
calibration.json with a fingerprint of the out-of-fold files, and applied wherever a stage's
outputs are used (the combiners' fit, `evaluate`, `predict`) when `combine.calibrate` is set.
The file is read and checked once per use (`Calibration.of`), not once per batch."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from hierclf.combine.temperature import TEMPERATURES, fit_temperature, scaled, scaled_blocks
from hierclf.errors import RunError
from hierclf.hierarchy.layout import Block
from hierclf.hierarchy.stage import NOT_IN_STAGE, Stage
from hierclf.metrics import calibration as calibration_scores
from hierclf.readback import ReadBack
from hierclf.run.files import read_json, read_npz, write_text
from hierclf.run.folder import Run


@dataclass(frozen=True)
class Calibration:
    """The temperatures of every stage of a run, by stage name; none when it does not calibrate."""

    temperatures: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def of(cls, run: Run) -> "Calibration":
        """The run's calibration, refused when the recipe calibrates but calibration.json is missing
        or was fit on other out-of-fold outputs than the run's present ones."""
        if not run.recipe.combine.calibrate:
            return cls()
        refit = refit_remedy(run)
        check = ReadBack(str(run.calibration_path), f"delete it and {refit} again")
        saved = check.table(read_json(run.calibration_path), "the file") if run.calibration_path.exists() else {}
        found = {}
        for stage in run.stages:
            entry = saved.get(stage.name)
            if entry is None or check.table(entry, stage.name).get("fit_on") != _fingerprint(run, stage):
                state = "is not fit yet" if entry is None else "was fit on other out-of-fold outputs"
                raise RunError(f"{run.root}: the calibration of stage {stage.name} {state}; {refit}")
            found[stage.name] = check.numbers(check.field(entry, "temperatures", stage.name),
                                              f"{stage.name}.temperatures", len(stage.layout.blocks),
                                              lo=TEMPERATURES[0], hi=TEMPERATURES[1])
        return cls(found)

    def apply(self, stage: Stage, probs: np.ndarray) -> np.ndarray:
        """A stage's probabilities as the run uses them: temperature-scaled when it calibrates."""
        if stage.name not in self.temperatures:
            return probs
        return scaled_blocks(probs, stage.layout.sizes, self.temperatures[stage.name])


def refit_remedy(run: Run) -> str:
    """What fits a run's calibration and combiners again: its last stage's command."""
    return f"run `hierclf fit-fine {run.root}` (or fit-coarse, for a run without specialists) to fit it"


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
    temperatures = Calibration.of(run).temperatures
    return {stage.name: {block.name: {"temperature": t, "before": calibration_scores(targets, probs),
                                      "after": calibration_scores(targets, scaled(probs, t))}
                         for (block, probs, targets), t in zip(_blocks(run, stage), temperatures[stage.name])}
            for stage in run.stages if stage.name in temperatures}


def _blocks(run: Run, stage: Stage) -> Iterator[tuple[Block, np.ndarray, np.ndarray]]:
    """Each output block of the stage's out-of-fold file: its probabilities and targets on the
    stage's own rows."""
    oof = read_npz(run.oof_path(stage.name))
    targets = stage.layout.columns(oof["targets"])
    for column, (block, probs) in enumerate(zip(stage.layout.blocks, stage.layout.split(oof["probs"]))):
        rows = targets[:, column] != NOT_IN_STAGE
        yield block, probs[rows], targets[rows, column]


def _fingerprint(run: Run, stage: Stage) -> str:
    path = run.oof_path(stage.name)
    return hashlib.sha256(path.read_bytes() if path.exists() else b"missing").hexdigest()
