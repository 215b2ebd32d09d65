"""`fit`: one model on one split. Reads top to bottom: set-up, the epoch loop (train, validate,
log, keep the best, stop early), finish."""
from __future__ import annotations

import contextlib
import logging
import math
import time

import numpy as np
import torch
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch.utils.data import DataLoader

from hierclf.errors import TrainingError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.factory import hold_batchnorm, lowest_stages, set_backbone_frozen, set_frozen
from hierclf.models.inference import autocast, memory_layout, soft_vote
from hierclf.recipe.schema import TrainConfig, lower_is_better
from hierclf.runtime.devices import check_precision
from hierclf.runtime.processes import Placement
from hierclf.seeding import torch_seeded
from hierclf.train.losses import LayoutLoss
from hierclf.train.mixing import build_mixer
from hierclf.train.optim import build_optimizer, build_scheduler, scaled_lr
from hierclf.train.record import FitRecord
from hierclf.train.state import FitResult, TrainingState

log = logging.getLogger(__name__)


def fit(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader, config: TrainConfig,
        criterion: LayoutLoss, placement: Placement = Placement(), seed: int = 0,
        record: FitRecord | None = None) -> FitResult:
    """Train `model` for up to `config.epochs`, validating after each epoch; the epoch with the
    best `config.monitor` wins.

    The model's outputs and the loaders' targets (N×H) follow the loss's output layout; scores are
    the joint class's, and with several blocks each block's are logged beside them. With
    `config.ema` the moving average is what is validated and kept; with `config.freeze_epochs`
    only the classifier trains in the first epochs, and the `config.frozen_stages` never train.
    What draws from torch's global generator (dropout) or numpy's (mixup) is seeded with `seed`
    and leaves both generators as they were.

    Under torchrun (`placement.processes`), each process trains on its share of every batch and
    validates its share of the rows; gradients are averaged by DistributedDataParallel and the
    epoch's sums and validation outputs joined, so every process logs the same scores and takes
    the same decisions.

    Args:
        model: the network; trained in place, then left with its last epoch's weights.
        train_loader: batches of (images, N×H targets, rows) to train on.
        val_loader: the rows to validate on, unshuffled.
        config: the optimiser, schedule, mixing and epoch-loop keys of the stage.
        criterion: the stage's loss, which knows the output layout.
        placement: the device, and the processes that share each batch.
        seed: the seed of dropout and mixing.
        record: where the epochs are logged and written, and the fit saved after each epoch and
            resumed from (`FitRecord`); by default they are only logged.

    Returns:
        The best epoch, its weights and validation probabilities, and every epoch's figures."""
    record = record or FitRecord()
    with torch_seeded(placement.seed(seed)):
        # --- set-up
        training = _set_up(model, train_loader, config, criterion, placement, seed, record.name)
        record.resume(training, config.epochs)
        compiled = torch.compile(model) if config.compile else model  # shares the model's parameters
        validated = training.ema.module if training.ema is not None else compiled
        if config.head_init == "probe" and training.start is None:  # a resumed fit has scored it
            _score_start(training, validated, val_loader, config, criterion, placement, record)
        trained, trained_frozen = None, None
        lower = lowest_stages(model, config.frozen_stages, record.name) if config.frozen_stages else []
        for epoch in range(len(training.history), config.epochs):
            # --- train one epoch
            started = time.perf_counter()
            criterion.set_epoch(epoch + 1)
            frozen = _train_mode(model, epoch, config, lower)
            if trained is None or frozen != trained_frozen:  # DDP averages only what trains when it is built
                trained, trained_frozen = _trained(model, compiled, config, placement), frozen
            sums = _train_epoch(training, trained, epoch, config, criterion, placement, record)
            # --- validate
            val_probs, val_rows = placement.processes.gather_rows(
                *soft_vote([validated], val_loader, placement.device, criterion.layout, config.amp,
                           memory_format=memory_layout(config.channels_last)))
            entry = {**_train_figures(epoch, sums),
                     **_val_figures(np.asarray(val_loader.dataset.targets)[val_rows], val_probs, criterion.layout)}
            entry.update(lr=training.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started)
            training.history.append(entry)
            # --- keep the best, log, decide whether to stop
            improved = _keep_if_best(training, entry[config.monitor], config, val_probs, val_rows)
            record.epoch(entry, improved, config.epochs)
            if training.scheduler is not None:
                training.scheduler.step(epoch + 1, entry[config.monitor])
            stopping = config.patience and training.epochs_without_gain >= config.patience
            if not stopping and epoch + 1 < config.epochs:
                record.save(training, epoch + 1)
                record.check_budget(training, config.epochs)
            if stopping:
                log.info("%s stopped early: %s did not improve by more than %g for %d epochs",
                         record.name, config.monitor, config.min_delta, config.patience)
                training.best.stopped_early = True
                break
    # --- finish
    if config.freeze_epochs:
        set_backbone_frozen(model, False)
    set_frozen(model, lower, False)
    training.best.history, training.best.start = training.history, training.start
    return training.best


def _train_mode(model: torch.nn.Module, epoch: int, config: TrainConfig, lower: list[torch.nn.Parameter]) -> bool:
    """The model in training mode, but for what stays as loaded this epoch: the whole backbone's
    weights in the first `freeze_epochs` (whether they do is returned), the `frozen_stages` always
    (their normalisation layers keep their running statistics), and with `batchnorm = "frozen"`
    every normalisation layer's statistics throughout."""
    model.train()
    frozen = epoch < config.freeze_epochs
    if config.freeze_epochs:
        set_backbone_frozen(model, frozen)
    if config.batchnorm == "frozen":
        hold_batchnorm(model)
    if lower:
        set_frozen(model, lower, True)
    return frozen


def _set_up(model: torch.nn.Module, loader: DataLoader, config: TrainConfig, criterion: LayoutLoss,
            placement: Placement, seed: int, name: str) -> TrainingState:
    """The model on its device, the optimiser, its schedule (stepped per update), the mixer, the
    moving average and the loss scaler."""
    processes = placement.processes
    check_precision(config.precision, placement.device)
    model.to(placement.device, memory_format=memory_layout(config.channels_last))
    if config.sync_batchnorm:
        processes.sync_batchnorm(model)
    images_per_step = (loader.batch_size or 0) * processes.world * config.accumulate
    optimizer = build_optimizer(model, config, images_per_step, unfreezes=config.freeze_epochs > 0)
    if config.lr_base_batch:
        log.info("%s: lr %.3g for steps of %d images (lr %g at %d)", name, scaled_lr(config, images_per_step),
                 images_per_step, config.lr, config.lr_base_batch)
    scheduler = build_scheduler(optimizer, config, updates_per_epoch=math.ceil(len(loader) / config.accumulate))
    criterion.to(placement.device)
    mixer = build_mixer(config, criterion.layout, placement.seed(seed))
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup) if config.ema else None
    scaler = torch.amp.GradScaler("cuda", enabled=_amp(config, placement) and not torch.cuda.is_bf16_supported())
    return TrainingState(model=model, ema=ema, optimizer=optimizer, scheduler=scheduler, scaler=scaler, mixer=mixer,
                         loader=loader)


def _trained(model: torch.nn.Module, compiled: torch.nn.Module, config: TrainConfig,
             placement: Placement) -> torch.nn.Module:
    """What trains: alone, the model (compiled when asked); with several processes, the model in
    DistributedDataParallel, compiled when asked."""
    wrapped = placement.processes.wrap(model, placement.device)
    if wrapped is model:
        return compiled
    return torch.compile(wrapped) if config.compile else wrapped


def _train_epoch(training: TrainingState, trained: torch.nn.Module, epoch: int, config: TrainConfig,
                 criterion: LayoutLoss, placement: Placement, record: FitRecord) -> tuple[float, int, int]:
    """One pass over the training rows: the loss summed, the rows right and the rows seen, over
    every process."""
    device, processes, loader = placement.device, placement.processes, training.loader
    loss_sum, correct, seen = 0.0, 0, 0
    training.optimizer.zero_grad(set_to_none=True)
    for batch, (images, targets, _) in enumerate(record.progress(loader, epoch, config.epochs), start=1):
        images = images.to(device, non_blocking=True, memory_format=memory_layout(config.channels_last))
        targets = targets.to(device, non_blocking=True)
        # mixed images learn mixed targets; accuracy is still counted against the true ones
        images, learned = training.mixer(images, targets) if training.mixer is not None else (images, targets)
        # each batch adds its share of the step's mean loss; the step comes after `accumulate`
        # batches, or after the epoch's last (a short last group then counts for less)
        stepping = batch % config.accumulate == 0 or batch == len(loader)
        with processes.syncing(trained, stepping):  # gradients are exchanged only before a step
            with _step_autocast(config, placement):
                logits = trained(images)
                loss = criterion(logits.float(), learned)
            training.scaler.scale(loss / config.accumulate).backward()
        if stepping:
            _step(training, config)
        # summed over the processes every batch, so all of them stop together on a bad loss
        batch_loss, batch_correct, batch_seen = processes.all_sum(
            [loss.item() * len(targets), criterion.layout.correct(logits.detach(), targets), len(targets)])
        if not math.isfinite(batch_loss):
            raise TrainingError(f"{record.name} epoch {epoch + 1}, batch {batch}: the loss is "
                                f"{batch_loss / batch_seen}; training diverged (lower lr, set clip_grad, or check "
                                f"the images)")
        loss_sum += batch_loss
        correct += int(batch_correct)
        seen += int(batch_seen)
    return loss_sum, correct, seen


def _step(training: TrainingState, config: TrainConfig) -> None:
    """One optimiser update: clipped, scaled, averaged into the EMA, and the schedule advanced."""
    if config.clip_grad:
        training.scaler.unscale_(training.optimizer)
        dispatch_clip_grad(training.model.parameters(), config.clip_grad, mode=config.clip_mode)
    training.scaler.step(training.optimizer)
    training.scaler.update()
    training.optimizer.zero_grad(set_to_none=True)
    training.updates += 1
    if training.ema is not None:
        training.ema.update(training.model, step=training.updates)
    if training.scheduler is not None:
        training.scheduler.step_update(training.updates)


def _score_start(training: TrainingState, validated: torch.nn.Module, val_loader: DataLoader, config: TrainConfig,
                 criterion: LayoutLoss, placement: Placement, record: FitRecord) -> None:
    """Epoch 0: the starting model validated before any step (with LP-FT, the linear probe), and
    kept as the best so far when `monitor` is a validation figure, so no trained epoch that
    scores below it is kept."""
    started = time.perf_counter()
    val_probs, val_rows = placement.processes.gather_rows(
        *soft_vote([validated], val_loader, placement.device, criterion.layout, config.amp,
                   memory_format=memory_layout(config.channels_last)))
    entry = {"epoch": 0, **_val_figures(np.asarray(val_loader.dataset.targets)[val_rows], val_probs,
                                        criterion.layout), "seconds": time.perf_counter() - started}
    training.start = entry
    kept = config.monitor.startswith("val_") and _keep_if_best(training, entry[config.monitor], config, val_probs,
                                                               val_rows)
    record.start(entry, kept, config.epochs)


def _train_figures(epoch: int, sums: tuple[float, int, int]) -> dict[str, float]:
    """The epoch's training figures: loss and accuracy over the rows seen."""
    loss_sum, correct, seen = sums
    return {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}


def _val_figures(val_targets: np.ndarray, val_probs: np.ndarray, layout: OutputLayout) -> dict[str, float]:
    """Validation loss and scores (each block's too)."""
    val_scores = layout.scores(val_targets, val_probs)
    entry = {"val_loss": layout.log_loss(val_targets, val_probs), "val_accuracy": val_scores["accuracy"],
             "val_macro_f1": val_scores["macro_f1"]}
    for head, head_scores in val_scores.get("heads", {}).items():
        entry.update({f"val_{head}_accuracy": head_scores["accuracy"], f"val_{head}_macro_f1": head_scores["macro_f1"]})
    return entry


def _keep_if_best(training: TrainingState, value: float, config: TrainConfig, val_probs: np.ndarray,
                  val_rows: np.ndarray) -> bool:
    """Keep the epoch's weights and outputs when `value` improves on the best by more than
    min_delta; count the epochs without a gain. Returns whether it improved."""
    best = training.best
    if best is None:
        improved = True
    else:
        gain = best.best_value - value if lower_is_better(config.monitor) else value - best.best_value
        improved = gain > config.min_delta
    if improved:
        state = {key: tensor.detach().to("cpu", copy=True) for key, tensor in training.kept.state_dict().items()}
        training.best = FitResult(best_epoch=len(training.history), best_value=value, best_state=state,
                                  val_probs=val_probs, val_rows=val_rows)
        training.epochs_without_gain = 0
    else:
        training.epochs_without_gain += 1
    return improved


def _amp(config: TrainConfig, placement: Placement) -> bool:
    """Mixed precision: asked for, and on CUDA."""
    return config.amp and placement.device.type == "cuda"


def _step_autocast(config: TrainConfig, placement: Placement) -> contextlib.AbstractContextManager:
    """A training step's mixed precision: amp's on CUDA; on a CPU, bf16 where `precision` asks."""
    if placement.device.type == "cuda":
        return autocast(placement.device, config.amp)
    if config.precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
