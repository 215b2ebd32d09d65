"""What training leaves on disk as it goes, written by one process: the state to resume a fit
from (resume.safetensors), then a finished fold's files; what is done with each epoch's figures
(metrics.jsonl, log lines, warnings, TensorBoard) is its callbacks' (callbacks.py). Under torchrun every process holds a `FitRecord`, but only rank 0's writes; the others
read rank 0's resume file, so code that trains never asks which process it is."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from hierclf.errors import OverBudget
from hierclf.models.saved import save_model
from hierclf.models.spec import ModelSpec
from hierclf.run.files import write_json, write_npz
from hierclf.train.callbacks import FitCallback, GuardWarnings, LogLines, MetricsFile
from hierclf.train.checkpoint import capture, load_checkpoint, restore, save_checkpoint
from hierclf.train.guard import Guard
from hierclf.train.state import TrainingState

log = logging.getLogger(__name__)

RESUME = "resume.safetensors"
"""A fold's training state after its last finished epoch, while the fold is unfinished."""


class FitRecord:
    """A fit's epochs: its callbacks told of each (with a `folder`: metrics.jsonl; the log lines;
    the guard's warnings; TensorBoard), and with a `folder` the training state saved after every
    epoch into its resume file and restored from it. With `writes` False (a process other than
    rank 0) nothing is written, only the log lines are kept and progress bars stay off; the
    resume file is still read, but the draws it holds are rank 0's and are left out."""

    def __init__(self, name: str = "", folder: Path | None = None, writes: bool = True,
                 seconds_limit: float | None = None, made_for: str = "", guard: Guard | None = None,
                 loggers: Sequence[FitCallback] = ()):
        """`seconds_limit`: the most seconds the fit's epochs may take (`check_budget`);
        `made_for`: what the fit is (`fit_identity`), so a resume file of another fit is refused;
        `guard`: what a fit from trained weights is checked against as its epochs are logged;
        `loggers`: callbacks of the writing process's own, after metrics.jsonl and before the
        log lines (TensorBoard's `Board`, where the stage writes one; a user's logger)."""
        self.name, self.folder, self.writes = name, folder, writes
        self.seconds_limit, self.made_for, self.guard = seconds_limit, made_for, guard
        writing = writes and folder is not None
        self.callbacks: list[FitCallback] = [
            *([MetricsFile(self.metrics_path)] if writing else []), *(loggers if writes else []),
            LogLines(name), *([GuardWarnings(guard)] if guard is not None and writes else [])]

    @property
    def metrics_path(self) -> Path | None:
        return self.folder / "metrics.jsonl" if self.folder is not None else None

    @property
    def resume_path(self) -> Path | None:
        return self.folder / RESUME if self.folder is not None else None

    def resume(self, training: TrainingState, epochs: int) -> None:
        """Restore `training` from the resume file, if there is one, and tell the callbacks the
        epochs done so far."""
        saved = load_checkpoint(self.resume_path, self.made_for, epochs) if self.resume_path is not None else None
        if saved is not None:
            restore(training, saved, str(self.resume_path), own_draws=self.writes)
            log.info("%s: resuming after epoch %d of %d", self.name, saved.epoch, epochs)
        for callback in self.callbacks:
            callback.resumed(training.history)

    def progress(self, batches: Iterable, epoch: int, epochs: int) -> Iterable:
        """The epoch's batches, with a progress bar where one is shown (rank 0, on a terminal)."""
        return tqdm(batches, desc=f"{self.name} epoch {epoch + 1}/{epochs}", leave=False,
                    disable=None if self.writes else True)

    def epoch(self, entry: dict[str, Any], improved: bool, epochs: int) -> None:
        """One trained epoch's figures, to every callback."""
        for callback in self.callbacks:
            callback.epoch(entry, improved, epochs)

    def start(self, entry: dict[str, Any], kept: bool, epochs: int) -> None:
        """The starting model's figures (epoch 0, LP-FT's probe; its seconds include the probe's),
        to every callback; metrics.jsonl holds trained epochs only."""
        if self.guard is not None:
            entry["seconds"] += self.guard.probe_seconds
        for callback in self.callbacks:
            callback.started(entry, kept, epochs)

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
        result.json (which marks the fold finished), and no resume file; then the callbacks told."""
        if not self.writes or self.folder is None:
            return
        if self.guard is not None and self.guard.probe_macro_f1 is not None:
            result = {**result, "probe_macro_f1": self.guard.probe_macro_f1}
        write_npz(self.folder / "val.npz", **val)
        save_model(self.folder, model, spec)
        write_json(self.folder / "result.json", result)
        self.resume_path.unlink(missing_ok=True)
        for callback in self.callbacks:
            callback.finished(val, result)


def fit_identity(*parts: Any) -> str:
    """A digest of what makes a fit itself (its stage, fold, training keys and rows), kept in its
    resume file: a resume file copied from another run, or saved under other keys, is refused."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
