"""A run's out-of-fold outputs, every stage aligned on the same rows: what `evaluate` scores and
what the stacking combiner learns from."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from hierclf.combine import Stacking, stacking_features
from hierclf.errors import RunError
from hierclf.hierarchy import Hierarchy
from hierclf.runs import RunDir, read_npz, write_text


@dataclass(frozen=True, eq=False)
class RunOOF:
    """Out-of-fold rows of a run: ids, fine labels, fold, and each stage's probabilities."""

    ids: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    coarse_probs: np.ndarray
    specialist_probs: dict[str, np.ndarray]


def load_oof(run: RunDir, hierarchy: Hierarchy | None = None) -> RunOOF:
    """Every stage's out-of-fold probabilities: the coarse stage's, and each specialist's (every
    group's; the heads' that have one)."""
    hierarchy = hierarchy or run.hierarchy()
    coarse = _stage_oof(run, "coarse", "fit-coarse")
    split = read_npz(run.folds_path)
    label_of = dict(zip(split["ids"].tolist(), split["labels"].tolist()))
    labels = np.asarray([label_of[i] for i in coarse["ids"].tolist()], dtype=np.int64)
    specialists = {}
    for group in hierarchy.specialist_parts(run.recipe().specialist_names):
        oof = _stage_oof(run, run.specialist_stage(group), f"fit-fine (specialist {group.name!r})")
        if not np.array_equal(oof["ids"], coarse["ids"]):
            raise RunError(f"{run.stage_dir(run.specialist_stage(group))}/oof.npz covers other rows than the "
                           f"coarse stage's; retrain that specialist")
        specialists[group.name] = oof["probs"]
    return RunOOF(ids=coarse["ids"], labels=labels, folds=coarse["fold"], coarse_probs=coarse["probs"],
                  specialist_probs=specialists)


def stacking_for_run(run: RunDir, c: float) -> Stacking:
    """The run's stacking combiner (combiner.json), fit on the out-of-fold outputs when there is
    none yet, or when a stage was retrained since (the file records what it was fit on)."""
    path = run.root / "combiner.json"
    hierarchy = run.hierarchy()
    fingerprint = _fingerprint(run, hierarchy, c)
    if path.exists():
        text = path.read_text()
        if json.loads(text).get("fit_on") == fingerprint:
            return Stacking.from_json(text, str(path))
    oof = load_oof(run, hierarchy)
    features = stacking_features(hierarchy, oof.coarse_probs, oof.specialist_probs)
    combiner = Stacking.fit(features, oof.labels, hierarchy.num_classes, c)
    payload = json.loads(combiner.to_json())
    payload["fit_on"] = fingerprint
    write_text(path, json.dumps(payload) + "\n")
    return combiner


def _fingerprint(run: RunDir, hierarchy: Hierarchy, c: float) -> str:
    digest = hashlib.sha256(f"C={c}".encode())
    parts = hierarchy.specialist_parts(run.recipe().specialist_names)
    for stage in ["coarse"] + [run.specialist_stage(part) for part in parts]:
        path = run.oof_path(stage)
        digest.update(path.read_bytes() if path.exists() else b"missing")
    return digest.hexdigest()


def _stage_oof(run: RunDir, stage: str, command: str) -> dict[str, np.ndarray]:
    if not run.oof_path(stage).exists():
        raise RunError(f"{run.root}: the {stage} stage has no out-of-fold file yet; run `hierclf {command}` "
                       f"until every fold is trained")
    return read_npz(run.oof_path(stage))
