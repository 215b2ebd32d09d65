"""One fold of one stage: its model, its loaders, `fit`, and the files a finished fold leaves.

Rows whose target is NOT_IN_STAGE (a group specialist's other classes) are neither trained nor
scored on, but the fold's model still predicts them, so every row gets an out-of-fold output
from every stage and the combiners can compose them.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, TrainingOrder, build_transform, make_loader
from hierclf.errors import RunError
from hierclf.hierarchy.stage import Stage, in_stage
from hierclf.models.factory import create_model
from hierclf.models.inference import memory_layout, soft_vote
from hierclf.models.probe import BlockProbes, block_features
from hierclf.models.spec import ModelSpec
from hierclf.models.weights import load_weights_file
from hierclf.recipe.finetuning import starts_trained
from hierclf.recipe.schema import learned_keys
from hierclf.run.folder import Run
from hierclf.runtime.processes import Placement
from hierclf.seeding import derive_seed
from hierclf.train.board import Board
from hierclf.train.loop import fit
from hierclf.train.guard import Guard, chance_loss, checked_epoch
from hierclf.train.losses import LayoutLoss, build_layout_loss
from hierclf.train.record import FitRecord, fit_identity
from hierclf.train.state import FitResult

log = logging.getLogger(__name__)


def train_fold(run: Run, stage: Stage, items: Items, fold: int, placement: Placement = Placement(),
               seconds_limit: float | None = None) -> None:
    """Train `stage` on every fold but `fold`, validate on `fold`, and write the fold's folder.
    Under torchrun each process trains on its share of every batch and predicts its share of
    the rows; rank 0 writes the folder. Epochs past `seconds_limit` stop it (see `FitRecord`)."""
    seed = stage.config.seed + fold
    model, spec = build_fold_model(run, stage, fold, seed)
    targets, fold_of_row = stage.targets(items.labels), run.folds.fold
    mine = in_stage(targets)
    train_rows = np.flatnonzero((fold_of_row != fold) & mine)
    val_rows = np.flatnonzero((fold_of_row == fold) & mine)
    other_rows = np.flatnonzero((fold_of_row == fold) & ~mine)
    loaders = FoldLoaders(stage, spec, items, targets, seed, placement)
    processes = placement.processes
    log.info("%s fold %d: %d training rows, %d validation rows, %s on %s%s", stage.name, fold, len(train_rows),
             len(val_rows), stage.config.model, placement.device, processes.sharing(stage.config.batch_size))
    criterion = build_layout_loss(stage.layout, stage.losses, stage.loss_keys, targets[train_rows])
    name = f"{stage.name} fold {fold}"
    record = FitRecord(name, run.fold_dir(stage.name, fold), writes=processes.is_main,
                       seconds_limit=seconds_limit,
                       made_for=fit_identity(stage.name, fold, learned_keys(stage.config),
                                             items.ids[train_rows].tolist()),
                       guard=_guard(name, stage, model, loaders, criterion, (train_rows, val_rows)),
                       loggers=[Board(run.fold_dir(stage.name, fold), stage.layout, run.recipe.to_toml())]
                       if stage.config.tensorboard else ())
    result = fit(model, loaders.of(train_rows, training=True), loaders.of(val_rows), stage.config, criterion,
                 placement, seed=derive_seed(seed, 1), record=record)
    model.load_state_dict(result.best_state)
    rows, probs = val_rows[result.val_rows], result.val_probs
    if len(other_rows):
        other_probs, order = loaders.predict(model, other_rows)
        rows, probs = np.concatenate([rows, other_rows[order]]), np.concatenate([probs, other_probs])
    # the kept model on its own training rows, unaugmented: the bias/variance diagnosis compares it
    train_probs, train_order = loaders.predict(model, train_rows)
    train_scores = stage.layout.scores(targets[train_rows][train_order], train_probs)
    record.finish_fold(dict(ids=items.ids[rows], probs=probs, targets=stage.layout.stored(targets[rows])), model,
                       spec, _result(stage, fold, result, (len(train_rows), len(val_rows)), train_scores))


def build_fold_model(run: Run, stage: Stage, fold: int, seed: int) -> tuple[torch.nn.Module, ModelSpec]:
    """The stage's model for `fold`: new, or (init_from_coarse) the same fold's coarse backbone
    with a new head, or with a flat coarse stage that model's classifier rows of the stage's
    classes; neither the coarse model nor this one ever saw this fold's rows."""
    config = stage.config
    if not config.init_from_coarse:
        return create_model(config, stage.layout, key=stage.key, separate=stage.separate, seed=seed)
    coarse_weights = run.fold_dir("coarse", fold) / "weights.safetensors"
    if not coarse_weights.is_file():
        raise RunError(f"{stage.key}.init_from_coarse: coarse fold {fold} of {run.root} is not trained")
    model, spec = create_model(dataclasses.replace(config, pretrained=False), stage.layout, key=stage.key, seed=seed)
    load_weights_file(model, coarse_weights, f"{stage.key}.init_from_coarse", new_head=True,
                      prefix=stage.coarse_backbone, head_rows=stage.coarse_rows)
    return model, spec


def _guard(name: str, stage: Stage, model: torch.nn.Module, loaders: "FoldLoaders", criterion: LayoutLoss,
           rows: tuple[np.ndarray, np.ndarray]) -> Guard | None:
    """What a fold that starts from trained weights (pretrained, or the coarse model's) is checked
    against as it trains: a uniform guess's loss, and with probe_check or head_init = "probe" the
    linear probe of its starting weights on the fold's rows, which LP-FT also sets as its heads."""
    config = stage.config
    if not starts_trained(config):
        return None
    started = time.perf_counter()
    probe = starting_probe(stage, model, loaders, rows) if config.probe_check or config.head_init == "probe" else None
    if probe is not None:
        log.info("%s: the linear probe of its starting weights scores %.4f validation macro-F1%s", name, probe,
                 ", and is its head (LP-FT)" if config.head_init == "probe" else "")
    return Guard(name, chance_loss(criterion, loaders.targets[rows[0]]), probe,
                 checked_epoch(config.epochs, config.warmup_epochs, config.freeze_epochs),
                 probe_seconds=time.perf_counter() - started)


def starting_probe(stage: Stage, model: torch.nn.Module, loaders: "FoldLoaders",
                    rows: tuple[np.ndarray, np.ndarray]) -> float:
    """The linear probe of `model` as it starts, in its own layout (a regression per output block
    on the features that block's classifier reads, from one unaugmented pass over the fold's
    training rows), scored on the validation rows by the joint class's macro-F1, as each epoch
    is; with head_init = "probe" the model's heads are set to it, so its epoch 0 is this probe."""
    train_rows, val_rows = rows
    (train_features, train_order), (val_features, val_order) = (loaders.features(model, part) for part in rows)
    probes = BlockProbes.fit(train_features, loaders.targets[train_rows[train_order]], stage.layout)
    if stage.config.head_init == "probe":
        probes.load_into(model)
    return stage.layout.scores(loaders.targets[val_rows[val_order]], probes.probs(val_features))["macro_f1"]


class FoldLoaders:
    """Loaders over any rows of a fold: augmented and sampled for training, plain otherwise; each
    process's share of them when several train together."""

    def __init__(self, stage: Stage, spec: ModelSpec, items: Items, targets: np.ndarray, seed: int,
                 placement: Placement):
        self.stage, self.spec, self.items, self.targets, self.seed, self.placement = \
            stage, spec, items, targets, seed, placement

    def of(self, rows: np.ndarray, training: bool = False, share: float = 1.0) -> DataLoader:
        """A loader over `rows`; `share`: the part of each training epoch drawn (a short trial's)."""
        config, spec, processes = self.stage.config, self.spec, self.placement.processes
        transform = build_transform(spec.img_size, spec.mean, spec.std, config.augment if training else "none",
                                    seed=processes.seed(self.seed))
        dataset = ImageDataset(self.items.subset(rows), self.targets[rows], transform, spec.in_chans)
        # samplers balance the stage's joint classes (with heads, every combination of values)
        order = TrainingOrder(sampler=config.sampler, class_cap=config.class_cap,
                              labels=self.stage.layout.joint(self.targets[rows]),
                              drop_last=len(rows) * share > config.batch_size, share=share) if training else None
        # the loader's own seed is the same on every process: they draw one order and share it
        return make_loader(dataset, config.batch_size // processes.world if training else config.batch_size,
                           workers=config.workers, device=self.placement.device, seed=self.seed, order=order,
                           shard=(processes.rank, processes.world))

    def predict(self, model: torch.nn.Module, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`model`'s probabilities for `rows`, and the position in `rows` of each, on every process."""
        probs, order = soft_vote([model], self.of(rows), self.placement.device, self.stage.layout,
                                 self.stage.config.amp, memory_format=memory_layout(self.stage.config.channels_last))
        return self.placement.processes.gather_rows(probs, order)

    def features(self, model: torch.nn.Module, rows: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Per output block, the pooled features `model`'s classifier reads for `rows`
        (unaugmented), and the position in `rows` of each, on every process."""
        model.to(self.placement.device)
        blocks, order = block_features(model, self.of(rows), self.placement.device, self.stage.config.amp)
        gathered = [self.placement.processes.gather_rows(block, order) for block in blocks]
        return [block for block, _ in gathered], gathered[0][1]


def _result(stage: Stage, fold: int, result: FitResult, rows: tuple[int, int],
            train_scores: dict[str, Any]) -> dict[str, Any]:
    """result.json: the best epoch and its validation scores, and the kept model's on its training rows."""
    best = result.start if result.best_epoch == 0 else result.history[result.best_epoch - 1]
    train_rows, val_rows = rows
    start = {"start": result.start} if result.start is not None else {}
    return {"fold": fold, "best_epoch": result.best_epoch, "epochs_run": len(result.history), **start,
            "stopped_early": result.stopped_early, "monitor": stage.config.monitor, "best_value": result.best_value,
            "val_accuracy": best["val_accuracy"], "val_macro_f1": best["val_macro_f1"],
            "train_rows": int(train_rows), "val_rows": int(val_rows),
            "train_accuracy": train_scores["accuracy"], "train_macro_f1": train_scores["macro_f1"],
            **{name: value for name, value in best.items() if name.startswith("val_") and name != "val_loss"}}
