"""What prediction returns (`Predictions`) and the CSV it is written as."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.data.items import UNKNOWN_LABEL
from hierclf.metrics import report_text
from hierclf.run.files import write_text


@dataclass(frozen=True, eq=False)
class Predictions:
    """Final-class probabilities and labels per row, the true labels where the input had them,
    and with `trace`, each stage's decision per row."""

    ids: np.ndarray
    probs: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    targets: np.ndarray
    trace: dict[str, np.ndarray] | None = None
    specialist_rows: dict[str, int] | None = None

    @property
    def has_targets(self) -> bool:
        return len(self.targets) > 0 and bool((self.targets != UNKNOWN_LABEL).all())


def write_predictions(path: Path, predictions: Predictions, with_probs: bool = False, label_index: bool = False) -> None:
    """Write `predictions` as a CSV, atomically.

    Args:
        path: the CSV to write.
        predictions: what `predict_items` or `predict_runs` returned.
        with_probs: add one probability column per class (prob_<class>).
        label_index: write the class index (0, 1, …) as the label, not its name.

    The columns are id, label, then the probabilities, then the trace (each stage's decision)
    when the predictions carry one."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    trace = predictions.trace or {}
    header = ["id", "label"] + ([f"prob_{name}" for name in predictions.class_names] if with_probs else [])
    writer.writerow(header + list(trace))
    for row, (image_id, label) in enumerate(zip(predictions.ids, predictions.labels)):
        values = [image_id, int(label) if label_index else predictions.class_names[label]]
        if with_probs:
            values += [f"{p:.6f}" for p in predictions.probs[row]]
        for column in trace.values():
            value = column[row]
            values.append("" if isinstance(value, float) and np.isnan(value) else
                          f"{value:.6f}" if isinstance(value, (float, np.floating)) else value)
        writer.writerow(values)
    write_text(path, buffer.getvalue())


def prediction_lines(input_path: Path, out: Path, predictions: Any, hierarchy: Any,
                     result: dict[str, float] | None) -> list[str]:
    """`hierclf predict`'s summary: what it wrote, how many images each specialist ran on, and
    where the input has labels its `result` (and each head's scores), then the per-class report."""
    count = len(predictions.ids)
    lines = [f"wrote {count} predictions to {out}"]
    lines += [f"  specialist {name!r} ran on {rows} of {count} images"
              for name, rows in (predictions.specialist_rows or {}).items()]
    if result is None:
        return lines
    lines.append(f"\n{input_path}: macro-F1 {result['macro_f1']:.4f}  accuracy {result['accuracy']:.4f}")
    parts = hierarchy.coarse_layout.label_scores(hierarchy.coarse_targets(predictions.targets),
                                                 hierarchy.coarse_targets(predictions.labels))
    lines += [f"  head {name}: macro-F1 {head['macro_f1']:.4f}  accuracy {head['accuracy']:.4f}"
              for name, head in parts.get("heads", {}).items()]
    return lines + ["\n" + report_text(predictions.targets, predictions.labels, predictions.class_names)]
