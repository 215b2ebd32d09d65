"""What is done with a fit's epochs as they are logged, one job a class (fastai's and Lightning's
callbacks): the metrics.jsonl file, the log lines, the guard's warnings, TensorBoard (board.py).
`FitRecord` keeps the fit's state (its resume file, its budget, a finished fold's files) and
tells each callback in its list what happened, in order; the next logger is one class here, not
an edit of the record or the loop."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import unwritable
from hierclf.run.files import write_text
from hierclf.train.guard import Guard

log = logging.getLogger(__name__)


class FitCallback:
    """One thing done with a fit's epochs; every hook does nothing unless overridden."""

    def resumed(self, history: list[dict[str, Any]]) -> None:
        """The fit (re)starts with these epochs done (none, for a fresh one)."""

    def started(self, entry: dict[str, Any], kept: bool, epochs: int) -> None:
        """The starting model scored as epoch 0 (LP-FT's probe head); `kept` if it is the best so far."""

    def epoch(self, entry: dict[str, Any], improved: bool, epochs: int) -> None:
        """A trained epoch's figures; `improved` if `monitor` kept it."""

    def finished(self, val: dict[str, np.ndarray], result: dict[str, Any]) -> None:
        """The fold's files are written: its kept model's validation outputs and result."""


class MetricsFile(FitCallback):
    """metrics.jsonl: one line per trained epoch, the resumed ones written once each."""

    def __init__(self, path: Path):
        self.path = path

    def resumed(self, history: list[dict[str, Any]]) -> None:
        write_text(self.path, "".join(json.dumps(entry) + "\n" for entry in history))

    def epoch(self, entry: dict[str, Any], improved: bool, epochs: int) -> None:
        try:
            with self.path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")
        except OSError as error:
            raise unwritable(self.path, error) from None


class LogLines(FitCallback):
    """A log line per epoch, the starting model's included."""

    def __init__(self, name: str):
        self.name = name

    def started(self, entry: dict[str, Any], kept: bool, epochs: int) -> None:
        log.info("%s epoch 0/%d (its start)  val_loss %.4f  val_acc %.4f  val_f1 %.4f%s  %.1fs%s", self.name, epochs,
                 entry["val_loss"], entry["val_accuracy"], entry["val_macro_f1"], _per_head(entry), entry["seconds"],
                 "  *" if kept else "")

    def epoch(self, entry: dict[str, Any], improved: bool, epochs: int) -> None:
        log.info("%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f  val_f1 %.4f%s  lr %.2e  %.1fs%s",
                 self.name, entry["epoch"], epochs, entry["train_loss"], entry["val_loss"], entry["val_accuracy"],
                 entry["val_macro_f1"], _per_head(entry), entry["lr"], entry["seconds"], "  *" if improved else "")


class GuardWarnings(FitCallback):
    """The guard's warnings: a fit from trained weights falling below its linear probe."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def epoch(self, entry: dict[str, Any], improved: bool, epochs: int) -> None:
        for warning in self.guard.after_epoch(entry):
            log.warning(warning)

    def finished(self, val: dict[str, np.ndarray], result: dict[str, Any]) -> None:
        for warning in self.guard.at_end(result["val_macro_f1"]) if self.guard.probe_macro_f1 is not None else []:
            log.warning(warning)


def _per_head(entry: dict[str, Any]) -> str:
    """Each head's validation macro-F1, for the log line of a heads model."""
    return "".join(f"  {name[4:-9]} {value:.3f}" for name, value in entry.items()
                   if name.startswith("val_") and name.endswith("_macro_f1") and name != "val_macro_f1")
