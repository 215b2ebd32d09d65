"""A run's out-of-fold outputs, every stage aligned on the same rows and calibrated as the run
uses them: what `evaluate` scores and what the combiners that learn are fit on."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierclf.combine.base import StageOutputs
from hierclf.errors import RunError
from hierclf.run.calibration import Calibration
from hierclf.hierarchy.stage import Stage
from hierclf.readback import ReadBack
from hierclf.run.files import read_npz
from hierclf.run.fold_files import checked_outputs
from hierclf.run.folder import Run


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
    """Every stage's out-of-fold probabilities: the coarse stage's, and each specialist's.

    Args:
        run: an opened run whose stages have every fold trained.

    Returns:
        The rows' ids, folds and fine labels, and each stage's (calibrated) probabilities."""
    calibration = Calibration.of(run)
    coarse = stage_oof(run, run.coarse_stage, "fit-coarse")
    coarse["probs"] = calibration.apply(run.coarse_stage, coarse["probs"])
    label_of = dict(zip(run.folds.ids.tolist(), run.folds.labels.tolist()))
    labels = np.asarray([label_of[i] for i in coarse["ids"].tolist()], dtype=np.int64)
    specialists = {}
    for name, stage in run.specialist_stages.items():
        oof = stage_oof(run, stage, f"fit-fine (specialist {name!r})")
        if not np.array_equal(oof["ids"], coarse["ids"]):
            raise RunError(f"{run.stage_dir(stage.name)}/oof.npz covers other rows than the coarse stage's; "
                           f"retrain that specialist")
        specialists[name] = calibration.apply(stage, oof["probs"])
    return RunOOF(ids=coarse["ids"], folds=coarse["fold"], outputs=StageOutputs(coarse["probs"], specialists, labels))


def oof_complete(run: Run) -> bool:
    """Whether every stage of the run has its out-of-fold file."""
    return all(run.oof_path(stage.name).exists() for stage in run.stages)


def stage_oof(run: Run, stage: Stage, command: str) -> dict[str, np.ndarray]:
    """A stage's oof.npz, checked: its outputs, its folds, and its rows those of the run."""
    path = run.oof_path(stage.name)
    if not path.exists():
        raise RunError(f"{run.root}: the {stage.name} stage has no out-of-fold file yet; run `hierclf {command}` "
                       f"until every fold is trained")
    check = ReadBack(str(path), f"delete it and run `hierclf {command}` again to gather it from the folds")
    oof = checked_outputs(read_npz(path), stage.layout.width, check)
    fold = check.field(oof, "fold")
    if fold.shape != oof["ids"].shape or fold.dtype.kind not in "iu":
        check.fail("its folds are not one whole number per row")
    if not np.isin(oof["ids"], run.folds.ids).all():
        check.fail("it holds rows that are not the run's")
    return oof
