"""A stage's own files read back, every value that is used checked (`hierclf.readback`): a
fold's epoch lines (metrics.jsonl), result (result.json) and validation outputs (val.npz), and
the stage's outputs and summary. A damaged or edited one ends in one line naming it, never in a
traceback or a wrong figure."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hierclf.readback import ReadBack, parse_json
from hierclf.run.files import read_json, read_npz

RETRAIN = "delete the fold's folder to train it again"

SCORES = ("val_accuracy", "val_macro_f1", "train_accuracy", "train_macro_f1", "probe_macro_f1")
"""The result.json scores a report reads: each a share, 0 to 1."""


def read_history(folder: Path) -> list[dict[str, Any]]:
    """The epochs a fold's metrics.jsonl records (none for a fold not begun), each a table whose
    epoch is a whole number and whose seconds a number of at least 0.

    Args:
        folder: the fold's folder (RUN/STAGE/fold-K).

    Returns:
        One table per epoch, in order (its train_loss, val_macro_f1, lr, seconds…)."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return []
    check = ReadBack(str(path), RETRAIN)
    history = []
    for line, text in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = parse_json(text)
        except ValueError:
            check.fail(f"line {line} is not JSON")
        check.number(check.field(entry, "epoch", f"line {line}"), f"line {line}: epoch", whole=True, lo=1)
        check.number(entry.get("seconds", 0.0), f"line {line}: seconds", lo=0)
        history.append(entry)
    return history


def read_result(folder: Path) -> dict[str, Any]:
    """A finished fold's result.json: its row and epoch counts whole numbers, its scores shares."""
    path = folder / "result.json"
    check = ReadBack(str(path), RETRAIN)
    result = check.table(read_json(path), "the file")
    for key in ("fold", "best_epoch", "epochs_run", "train_rows", "val_rows"):
        check.number(check.field(result, key), key, whole=True, lo=0)
    for key in SCORES:
        if key in result or key.startswith("val_"):
            check.number(check.field(result, key), key, lo=0.0, hi=1.0)
    return result


def read_val(folder: Path, width: int) -> dict[str, np.ndarray]:
    """A finished fold's val.npz: one id and one row of `width` probabilities (finite, 0 to 1) per
    validation row."""
    path = folder / "val.npz"
    return checked_outputs(read_npz(path), width, ReadBack(str(path), RETRAIN))


def read_val_probs(folder: Path, width: int, ids: np.ndarray) -> np.ndarray:
    """A finished fold's validation probabilities, one row per id of `ids` in that order (the
    fold's rows as another stage's outputs order them, so two stages' rows line up)."""
    val = read_val(folder, width)
    position = {image_id: row for row, image_id in enumerate(val["ids"].tolist())}
    return val["probs"][np.asarray([position[i] for i in ids.tolist()], dtype=np.int64)]


def checked_outputs(arrays: dict[str, np.ndarray], width: int, check: ReadBack) -> dict[str, np.ndarray]:
    """A stage's saved outputs (a fold's val.npz, a stage's oof.npz): one id and one row of
    `width` probabilities (finite, 0 to 1) per row."""
    ids, probs = check.field(arrays, "ids"), check.field(arrays, "probs")
    if ids.ndim != 1 or probs.ndim != 2 or probs.shape != (len(ids), width):
        check.fail(f"probs of shape {probs.shape} for {len(ids)} ids, expected ({len(ids)}, {width})")
    if probs.dtype.kind != "f" or not np.isfinite(probs).all() or (probs.size and (probs.min() < 0 or probs.max() > 1)):
        check.fail("its probabilities are not all finite numbers from 0 to 1")
    return arrays


def read_summary(path: Path) -> dict[str, Any]:
    """A stage's summary.json (its out-of-fold scores and each fold's), the values that are shown checked."""
    check = ReadBack(str(path), "delete it and run the stage's fit command again to gather it from the folds")
    summary = check.table(read_json(path), "the file")
    check.text(check.field(summary, "stage"), "stage")
    check.number(check.field(summary, "rows"), "rows", whole=True, lo=0)
    for key in ("oof_accuracy", "oof_macro_f1"):
        check.number(check.field(summary, key), key, lo=0.0, hi=1.0)
    names = check.field(summary, "classes")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        check.fail("classes is not a list of names")
    folds = check.field(summary, "folds")
    if not isinstance(folds, list):
        check.fail("folds is not a list")
    for index, fold in enumerate(folds):
        for key in ("fold", "best_epoch", "epochs_run"):
            check.number(check.field(fold, key, f"folds[{index}]"), f"folds[{index}].{key}", whole=True, lo=0)
        for key in ("val_accuracy", "val_macro_f1"):
            check.number(check.field(fold, key, f"folds[{index}]"), f"folds[{index}].{key}", lo=0.0, hi=1.0)
        if "probe_macro_f1" in fold:
            check.number(fold["probe_macro_f1"], f"folds[{index}].probe_macro_f1", lo=0.0, hi=1.0)
    return summary
