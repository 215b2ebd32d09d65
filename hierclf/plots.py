"""Figures for reports, drawn on a matplotlib Figure of their own: no pyplot, so a notebook's
backend and figure list stay as the user set them."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from hierclf.files import atomic_path


def save_confusion_png(path: Path, matrix: np.ndarray, class_names: Sequence[str], title: str) -> None:
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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)


def save_reliability_png(path: Path, binned: dict[str, np.ndarray], title: str) -> None:
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
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
