"""Figures of a run's figures (confusion, reliability, learning curves), each drawn on a matplotlib
Figure of its own: no pyplot, so a notebook's backend and figure list stay as the user set them.
The reports save or embed them; TensorBoard's event files hold the confusion matrix."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


def png_bytes(figure: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes, for a report that embeds its images."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """A row-normalised confusion matrix (recall on the diagonal), with the counts written in."""
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(class_names) + 2)
    figure = Figure(figsize=(size + 1, size))
    axes = figure.add_subplot()
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(class_names)), class_names, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    if len(class_names) <= 25:
        for true, predicted in zip(*np.nonzero(matrix)):
            axes.text(predicted, true, str(matrix[true, predicted]), ha="center", va="center", fontsize=7,
                      color="white" if rates[true, predicted] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    figure.tight_layout()
    return figure


def reliability_figure(binned: dict[str, np.ndarray], title: str) -> Figure:
    """A reliability diagram: each confidence bin's accuracy against the diagonal of perfect
    calibration, and below it how many rows each bin holds."""
    bins = len(binned["counts"])
    centres = (np.arange(bins) + 0.5) / bins
    used = binned["counts"] > 0
    figure = Figure(figsize=(5, 5.6))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres[used], binned["accuracy"][used], width=1 / bins, edgecolor="black", label="accuracy")
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.scatter(binned["confidence"][used], binned["accuracy"][used], color="tab:red", s=12, zorder=3,
                label="mean confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(title, fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, binned["counts"], width=1 / bins, color="tab:grey")
    bottom.set_xlabel("top probability")
    bottom.set_ylabel("rows")
    figure.tight_layout()
    return figure


def learning_curves_figure(histories: dict[int, list[dict]], title: str) -> Figure:
    """Each fold's training and validation loss, and validation macro-F1, by epoch."""
    figure = Figure(figsize=(8, 3.2))
    losses, scores = figure.subplots(1, 2)
    for fold, history in sorted(histories.items()):
        epochs = [record["epoch"] for record in history]
        line, = losses.plot(epochs, [record["val_loss"] for record in history], label=f"fold {fold} validation")
        losses.plot(epochs, [record["train_loss"] for record in history], linestyle=":", color=line.get_color(),
                    label=f"fold {fold} training")
        scores.plot(epochs, [record["val_macro_f1"] for record in history], color=line.get_color(),
                    label=f"fold {fold}")
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend(fontsize=7)
    scores.set_xlabel("epoch")
    scores.set_ylabel("validation macro-F1")
    scores.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
