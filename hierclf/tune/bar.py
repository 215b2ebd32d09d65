"""The bar a specialist must clear on its fold: the flat model simply given the hierarchy's pixels.

A specialist that sees more pixels of its group is a resolution lever, and the plainest use of
more pixels is the flat model at a larger input size. So tune-fine trains the flat recipe on the
same fold at the side whose megapixels are the flat fold's plus the best specialist's (never
more), and the specialist is kept only where the pipeline beats that model beyond the noise of
the fold's rows (a paired bootstrap); otherwise the flat model at that size is the better
pipeline: as good, one model, no more pixels.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np

from hierclf.data import Items
from hierclf.metrics import paired_difference, scores
from hierclf.report.costs import Cost, fold_training_cost
from hierclf.run.fold_files import read_val_probs
from hierclf.run.folder import Run
from hierclf.train.stage import train_stage

log = logging.getLogger(__name__)


def matched_size(img_size: int, megapixels: float) -> int:
    """The input side at which the flat model's megapixels are the pipeline's: the flat fold's
    (1) plus a specialist's `megapixels` (a multiple of the flat fold's), rounded down."""
    return max(img_size, math.floor(img_size * math.sqrt(1.0 + megapixels) + 1e-9))


@dataclass(frozen=True)
class Bar:
    """The flat model at the matched size on the fold, against the best setting's pipeline."""

    img_size: int
    megapixels: float
    seconds: float
    macro_f1: float
    difference: dict[str, float]
    """The best pipeline's macro-F1 minus this model's, with its 95 % paired interval."""
    recipe: str = "RECIPE"
    """The flat recipe, as the verdict tells the user to fit it."""

    @property
    def cleared(self) -> bool:
        return self.difference["low"] > 0.0

    def line(self, width: int) -> str:
        label = f"flat at {self.img_size} px (the bar)"
        return (f"{label:<{width}}  {self.megapixels:>9.2f}×  {self.seconds:>6.2f}×  {'':>6}  "
                f"{self.macro_f1:>8.4f}")

    def verdict(self) -> str:
        shown = (f"the pipeline {self.difference['difference'] * 100:+.2f} points against it, 95% interval "
                 f"{self.difference['low'] * 100:+.2f} to {self.difference['high'] * 100:+.2f}")
        if self.cleared:
            return f"it beats the flat model at {self.img_size} px on this fold ({shown})."
        return (f"the flat model at {self.img_size} px scores as well for no more megapixels ({shown}): it is the "
                f"better pipeline here. Keep the flat run, at the larger size: hierclf fit-coarse "
                f"{self.recipe} --out RUN --set coarse.img_size={self.img_size}")


def _flat_recipe(run: Run) -> str:
    source = run.coarse_source
    return str(source.recipe_path) if source is not None else str(run.recipe_path)


def flat_bar(run: Run, items: Items, fold: int, megapixels: float, coarse: Cost, ids: np.ndarray,
             labels: np.ndarray, best: np.ndarray) -> Bar:
    """Train the flat stage on `fold` at the size `megapixels` buys (kept under RUN/tuning/, so
    a second call reuses it; at the flat run's own size, its fold as it is) and score it on the
    fold's rows against the `best` pipeline's labels.

    `ids` and `labels` are the fold's rows and classes in the order of `best`."""
    stage = run.coarse_stage
    size = matched_size(stage.config.img_size, megapixels)
    if size != stage.config.img_size:  # at its own size, the bar is the flat fold as trained
        stage = dataclasses.replace(stage, name=f"tuning/flat-{size}px",
                                    config=dataclasses.replace(stage.config, img_size=size))
        log.info("tune-fine: the flat model at %d px", size)
        run.bind_stage(stage)
        if not run.fold_finished(stage.name, fold):
            train_stage(run, stage, items, fold)
    predicted = read_val_probs(run.fold_dir(stage.name, fold), stage.layout.width, ids).argmax(1)
    classes = stage.layout.width
    difference = paired_difference(labels, best, predicted, classes, seed=run.recipe.folds.seed)
    cost = fold_training_cost(run, stage, fold)
    return Bar(stage.config.img_size, cost.megapixels / max(coarse.megapixels, 1e-12),
               cost.seconds / max(coarse.seconds, 1e-12), scores(labels, predicted, classes)["macro_f1"], difference,
               _flat_recipe(run))
