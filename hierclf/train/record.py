"""What training leaves on disk as it goes, written by one process: the epoch lines of a fit
(metrics.jsonl) and the state to resume it from (resume.safetensors), then a finished fold's
files. Under torchrun every process holds a `FitRecord`, but only rank 0's writes; the others
read rank 0's resume file, so code that trains never asks which process it is."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from hierclf.errors import OverBudget, unwritable
from hierclf.models.saved import save_model
from hierclf.models.spec import ModelSpec
from hierclf.run.files import write_json, write_npz, write_text
from hierclf.train.board import Board
from hierclf.train.checkpoint import capture, load_checkpoint, restore, save_checkpoint
from hierclf.train.guard import Guard
from hierclf.train.state import TrainingState

log = logging.getLogger(__name__)

RESUME = "resume.safetensors"
"""A fold's training state after its last finished epoch, while the fold is unfinished."""


class FitRecord:
    """A fit's epochs: each logged as a line, and with a `folder` appended to its metrics.jsonl,
    the training state saved after every epoch into its resume file and restored from it. With
    `writes` False (a process other than rank 0) nothing is written and progress bars stay off;
    the resume file is still read, but the draws it holds are rank 0's and are left out."""

    def __init__(self, name: str = "", folder: Path | None = None, writes: bool = True,
                 seconds_limit: float | None = None, made_for: str = "", guard: Guard | None = None,
                 board: Board | None = None):
        """`seconds_limit`: the most seconds the fit's epochs may take (`check_budget`);
        `made_for`: what the fit is (`fit_identity`), so a resume file of another fit is refused;
        `guard`: what a fit from trained weights is checked against as its epochs are logged;
        `board`: the fold's TensorBoard event files, where the stage writes them."""
        self.name, self.folder, self.writes = name, folder, writes
        self.seconds_limit, self.made_for, self.guard = seconds_limit, made_for, guard
        self.board = board if writes else None

    @property
    def metrics_path(self) -> Path | None:
        return self.folder / "metrics.jsonl" if self.folder is not None else None

    @property
    def resume_path(self) -> Path | None:
        return self.folder / RESUME if self.folder is not None else None

    def resume(self, training: TrainingState, epochs: int) -> None:
        """Restore `training` from the resume file, if there is one, and write the epochs done so
        far into metrics.jsonl, once each."""
        saved = load_checkpoint(self.resume_path, self.made_for, epochs) if self.resume_path is not None else None
        if saved is not None:
            restore(training, saved, str(self.resume_path), own_draws=self.writes)
            log.info("%s: resuming after epoch %d of %d", self.name, saved.epoch, epochs)
        if self.writes and self.metrics_path is not None:
            write_text(self.metrics_path, "".join(json.dumps(entry) + "\n" for entry in training.history))
        if self.board is not None:
            self.board.start(len(training.history))

    def progress(self, batches: Iterable, epoch: int, epochs: int) -> Iterable:
        """The epoch's batches, with a progress bar where one is shown (rank 0, on a terminal)."""
        return tqdm(batches, desc=f"{self.name} epoch {epoch + 1}/{epochs}", leave=False,
                    disable=None if self.writes else True)

    def epoch(self, entry: dict[str, Any], improved: bool, epochs: int) -> None:
        """One epoch's figures: a line in the log, a line in metrics.jsonl."""
        if self.writes and self.metrics_path is not None:
            try:
                with self.metrics_path.open("a") as handle:
                    handle.write(json.dumps(entry) + "\n")
            except OSError as error:
                raise unwritable(self.metrics_path, error) from None
        if self.board is not None:
            self.board.epoch(entry)
        log.info("%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f  val_f1 %.4f%s  lr %.2e  %.1fs%s",
                 self.name, entry["epoch"], epochs, entry["train_loss"], entry["val_loss"], entry["val_accuracy"],
                 entry["val_macro_f1"], _per_head(entry), entry["lr"], entry["seconds"], "  *" if improved else "")
        for warning in self.guard.after_epoch(entry) if self.guard is not None and self.writes else []:
            log.warning(warning)

    def start(self, entry: dict[str, Any], kept: bool, epochs: int) -> None:
        """The starting model's figures (epoch 0, LP-FT's probe; its seconds include the probe's):
        a line in the log and step 0 on the board; metrics.jsonl holds trained epochs only."""
        if self.guard is not None:
            entry["seconds"] += self.guard.probe_seconds
        if self.board is not None:
            self.board.epoch(entry)
        log.info("%s epoch 0/%d (its start)  val_loss %.4f  val_acc %.4f  val_f1 %.4f%s  %.1fs%s", self.name, epochs,
                 entry["val_loss"], entry["val_accuracy"], entry["val_macro_f1"], _per_head(entry), entry["seconds"],
                 "  *" if kept else "")

    def check_budget(self, training: TrainingState, epochs: int) -> None:
        """Stop the fit (`OverBudget`) once its epochs, resumed ones included, took longer than
        `seconds_limit`; call it after `save`, so the resume file holds every epoch done."""
        seconds = sum(float(entry.get("seconds", 0.0)) for entry in [training.start or {}, *training.history])
        if self.seconds_limit is not None and seconds > self.seconds_limit:
            done = len(training.history)
            raise OverBudget(f"{self.name}: {seconds:.1f} s after epoch {done} of {epochs}, over its "
                             f"{self.seconds_limit:.1f} s", done)

    def save(self, training: TrainingState, epochs_done: int) -> None:
        """The training state after `epochs_done` epochs, into the resume file."""
        if self.writes and self.resume_path is not None:
            save_checkpoint(self.resume_path, capture(training, epochs_done), self.made_for)

    def finish_fold(self, val: dict[str, np.ndarray], model: torch.nn.Module, spec: ModelSpec,
                    result: dict[str, Any]) -> None:
        """A finished fold's files: its validation outputs, its kept weights and model.json, then
        result.json (which marks the fold finished), and no resume file."""
        if not self.writes or self.folder is None:
            return
        if self.guard is not None and self.guard.probe_macro_f1 is not None:
            result = {**result, "probe_macro_f1": self.guard.probe_macro_f1}
            for warning in self.guard.at_end(result["val_macro_f1"]):
                log.warning(warning)
        write_npz(self.folder / "val.npz", **val)
        save_model(self.folder, model, spec)
        write_json(self.folder / "result.json", result)
        self.resume_path.unlink(missing_ok=True)
        if self.board is not None:
            self.board.finish(val["probs"], val["targets"], result["best_epoch"])


def _per_head(entry: dict[str, Any]) -> str:
    """Each head's validation macro-F1, for the log line of a heads model."""
    return "".join(f"  {name[4:-9]} {value:.3f}" for name, value in entry.items()
                   if name.startswith("val_") and name.endswith("_macro_f1") and name != "val_macro_f1")


def fit_identity(*parts: Any) -> str:
    """A digest of what makes a fit itself (its stage, fold, training keys and rows), kept in its
    resume file: a resume file copied from another run, or saved under other keys, is refused."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
