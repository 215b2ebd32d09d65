"""TensorBoard event files of one fold of one stage, written beside its metrics.jsonl (in the fold's
folder), so `tensorboard --logdir runs/` shows every run, stage and fold side by side while they
train: each epoch's figures (the step is the epoch), the recipe as text, and at the end of the
fold its validation confusion matrix per output block. Optional: the `tensorboard` package
(`pip install 'hierclf[tensorboard]'`); a recipe that asks for it without it is refused before
training (`check_tensorboard`)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from hierclf.errors import RecipeError, importable
from hierclf.hierarchy.layout import OutputLayout
from hierclf.hierarchy.stage import NOT_IN_STAGE
from hierclf.metrics import confusion
from hierclf.train.callbacks import FitCallback

INSTALL = "pip install 'hierclf[tensorboard]' (or pip install tensorboard)"


def check_tensorboard(wanted: bool, key: str) -> None:
    """A stage that asks for event files where the tensorboard package is missing, or installed but
    failing to import (a protobuf or numpy it does not fit), refused before anything is written,
    naming the key and what to do."""
    if not wanted:
        return
    if importlib.util.find_spec("tensorboard") is None:
        raise RecipeError(f"{key}.tensorboard = true: TensorBoard is not installed; {INSTALL}, or set it to false")
    importable("torch.utils.tensorboard", f"{key}.tensorboard = true (or set it to false)", INSTALL)


def tag(key: str) -> str:
    """An epoch figure's TensorBoard tag: train_loss → train/loss, val_age_macro_f1 →
    val/age_macro_f1 (one section per prefix), lr and seconds as they are."""
    prefix, _, rest = key.partition("_")
    return f"{prefix}/{rest}" if prefix in ("train", "val") and rest else key


class Board(FitCallback):
    """The event files of one fold: opened when the fold starts or resumes (events of the epochs
    a killed process logged but did not save are purged, so a resumed fold appends, never
    duplicates), an epoch's figures flushed as each epoch ends (the starting model's as step 0),
    closed when the fold finishes."""

    def __init__(self, folder: Path, layout: OutputLayout, recipe_text: str):
        self.folder, self.layout, self.recipe_text = folder, layout, recipe_text
        self.writer: Any = None

    def resumed(self, history: list[dict[str, Any]]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        epochs_done = len(history)
        self.close()
        self.writer = SummaryWriter(str(self.folder), purge_step=epochs_done + 1 if epochs_done else None)
        if not epochs_done:
            self.writer.add_text("recipe", "```toml\n" + self.recipe_text + "\n```", 0)
        self.writer.flush()

    def started(self, entry: dict[str, Any], kept: bool, epochs: int) -> None:
        self.epoch(entry, kept, epochs)

    def epoch(self, entry: dict[str, Any], improved: bool = False, epochs: int = 0) -> None:
        for key, value in entry.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(tag(key), value, entry["epoch"])
        self.writer.flush()

    def finished(self, val: dict[str, np.ndarray], result: dict[str, Any]) -> None:
        """The kept model's validation confusion matrix of each output block, then the files closed."""
        from hierclf.figures import confusion_figure  # matplotlib, only where a fold ends

        targets, epoch = val["targets"].reshape(len(val["targets"]), -1), result["best_epoch"]
        blocks = np.split(val["probs"], np.cumsum(self.layout.sizes)[:-1], axis=1)
        for column, (block, block_probs) in enumerate(zip(self.layout.blocks, blocks)):
            kept = targets[:, column] != NOT_IN_STAGE
            matrix = confusion(targets[kept, column], block_probs[kept].argmax(1), block.size)
            name = f"confusion/{block.name}" if block.name else "confusion"
            self.writer.add_figure(name, confusion_figure(matrix, block.classes, f"validation, epoch {epoch}"), epoch)
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
