"""A stage's fold models, loaded once, soft-voting over any subset of rows: what a combiner asks
for when it needs a stage's probabilities."""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.data.tta import View
from hierclf.errors import RunError
from hierclf.hierarchy.stage import Stage
from hierclf.models.inference import memory_layout, soft_vote
from hierclf.models.saved import load_model
from hierclf.models.spec import ModelSpec
from hierclf.run.folder import Run

log = logging.getLogger(__name__)


class StageModels:
    """The fold models of one stage, loaded once, soft-voting over any subset of rows."""

    def __init__(self, run: Run, stage: Stage, device: torch.device, folds: Sequence[int] | None = None,
                 batch_size: int = 256, workers: int = 2, tta: Sequence[View] = ()):
        """`folds` limits the vote to those fold models (every finished one by default)."""
        finished = run.finished_folds(stage.name)
        command = f"hierclf fit-{'coarse' if stage.name == 'coarse' else 'fine'}"
        if folds is not None:
            _check_folds(run, stage.name, list(folds), finished, command)
        wanted = finished if folds is None else list(folds)
        if not wanted:
            raise RunError(f"{run.root} has no trained {stage.name} fold; run `{command}` first")
        if folds is None and len(wanted) < run.recipe.folds.count:
            log.warning("%s: using %d of %d folds (the others are not trained yet)", stage.name, len(wanted),
                        run.recipe.folds.count)
        loaded = [load_model(run.fold_dir(stage.name, fold), device) for fold in wanted]
        specs = {spec for _, spec in loaded}
        if len(specs) != 1:
            raise RunError(f"{run.stage_dir(stage.name)}: the fold models differ in input size or classes")
        self.memory_format = memory_layout(stage.config.channels_last)
        self.models = [model.to(memory_format=self.memory_format) for model, _ in loaded]
        self.spec: ModelSpec = specs.pop()
        self.device, self.batch_size, self.workers, self.tta = device, batch_size, workers, tuple(tta)

    def probs(self, items: Items) -> np.ndarray:
        """The mean softmax of the fold models (and their test-time views) for every row, in row order."""
        if len(items) == 0:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        transform = build_transform(self.spec.img_size, self.spec.mean, self.spec.std)
        dataset = ImageDataset(items, None, transform, self.spec.in_chans)
        loader = make_loader(dataset, self.batch_size, workers=self.workers, device=self.device)
        probs, rows = soft_vote(self.models, loader, self.device, self.spec.layout, tta=self.tta,
                                memory_format=self.memory_format)
        return probs[np.argsort(rows)]


def _check_folds(run: Run, stage: str, folds: list[int], finished: Sequence[int], command: str) -> None:
    """Folds asked for by number: each once, each a fold of the run, each trained for `stage`."""
    repeated = sorted({fold for fold in folds if folds.count(fold) > 1})
    if repeated:
        raise RunError(f"--folds {','.join(map(str, folds))}: fold {repeated[0]} is named twice; name each fold once")
    count = run.recipe.folds.count
    unknown = [fold for fold in folds if not 0 <= fold < count]
    if unknown:
        raise RunError(f"--folds {','.join(map(str, folds))}: this run has folds 0..{count - 1}, no fold {unknown[0]}")
    untrained = [fold for fold in folds if fold not in finished]
    if untrained:
        raise RunError(f"--folds {','.join(map(str, folds))}: fold {untrained[0]} of {stage} is not trained yet; run "
                       f"`{command}` first, or leave it out")
