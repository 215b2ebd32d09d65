"""`fit`: one model on one split. Reads top to bottom: set-up, the epoch loop (train, validate,
log, keep the best, stop early), finish."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hierclf.errors import TrainingError
from hierclf.inference import autocast, soft_vote
from hierclf.layout import OutputLayout
from hierclf.models import set_backbone_frozen
from hierclf.recipe import TrainConfig
from hierclf.seeding import torch_seeded
from hierclf.train.losses import LayoutLoss
from hierclf.train.mixing import build_mixer
from hierclf.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """What a fit leaves: the best epoch's weights and its validation probabilities."""

    best_epoch: int
    best_value: float
    best_state: dict[str, torch.Tensor]
    val_probs: np.ndarray
    val_rows: np.ndarray
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


def fit(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader, config: TrainConfig,
        device: torch.device, layout: OutputLayout, criterion: LayoutLoss, seed: int = 0,
        metrics_path: Path | None = None, name: str = "") -> FitResult:
    """Train `model` for up to `config.epochs`, validating after each epoch; the epoch with the
    best `config.monitor` wins. With `metrics_path`, one JSON line per epoch is written there.

    The model's outputs and the loaders' targets (N×H) follow `layout`; scores are the joint
    class's, and with several blocks each block's are logged beside them. With `config.ema`, the
    moving average is what is validated and kept; with `config.freeze_epochs`, only the
    classifier trains in the first epochs. What draws from torch's global generator (dropout) or
    numpy's (mixup) is seeded with `seed` and leaves both generators as they were."""
    with torch_seeded(seed):
        return _fit(model, train_loader, val_loader, config, device, layout, criterion, seed, metrics_path, name)


def _fit(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader, config: TrainConfig,
         device: torch.device, layout: OutputLayout, criterion: LayoutLoss, seed: int, metrics_path: Path | None,
         name: str) -> FitResult:
    # --- set-up
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    optimizer = build_optimizer(model, config)
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulate)
    scheduler = build_scheduler(optimizer, config, updates_per_epoch=steps_per_epoch)
    criterion = criterion.to(device)
    mixer = build_mixer(config, layout, seed)
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup) if config.ema else None
    forward = torch.compile(model) if config.compile else model  # shares the model's parameters
    kept = ema.module if ema is not None else model  # the weights validated and saved
    evaluated = kept if ema is not None else forward
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    lower_is_better = config.monitor.endswith("loss")
    val_targets = np.asarray(val_loader.dataset.targets)
    if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("")
    best: FitResult | None = None
    epochs_without_gain = 0
    updates = 0
    history: list[dict] = []

    for epoch in range(config.epochs):
        # --- train one epoch
        started = time.perf_counter()
        criterion.set_epoch(epoch + 1)
        model.train()
        if config.freeze_epochs:
            set_backbone_frozen(model, epoch < config.freeze_epochs)
        loss_sum, correct, seen = 0.0, 0, 0
        optimizer.zero_grad(set_to_none=True)
        batches = tqdm(train_loader, desc=f"{name} epoch {epoch + 1}/{config.epochs}", leave=False, disable=None)
        for batch, (images, targets, _) in enumerate(batches, start=1):
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            # mixed images learn mixed targets; accuracy is still counted against the true ones
            images, learned = mixer(images, targets) if mixer is not None else (images, targets)
            with autocast(device, use_amp):
                logits = forward(images)
                loss = criterion(logits.float(), learned)
            # each batch adds its share of the step's mean loss; the step comes after `accumulate`
            # batches, or after the epoch's last (a short last group then counts for less)
            scaler.scale(loss / config.accumulate).backward()
            if batch % config.accumulate == 0 or batch == len(train_loader):
                if config.clip_grad:
                    scaler.unscale_(optimizer)
                    dispatch_clip_grad(model.parameters(), config.clip_grad, mode=config.clip_mode)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                updates += 1
                if ema is not None:
                    ema.update(model, step=updates)
                if scheduler is not None:
                    scheduler.step_update(updates)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingError(f"{name} epoch {epoch + 1}, batch {batch}: the loss is {value}; training "
                                    f"diverged (lower lr, set clip_grad, or check the images)")
            loss_sum += value * len(targets)
            correct += layout.correct(logits.detach(), targets)
            seen += len(targets)

        # --- validate
        val_probs, val_rows = soft_vote([evaluated], val_loader, device, layout, use_amp)
        row_targets = val_targets[val_rows]
        val_loss = layout.log_loss(row_targets, val_probs)
        val_scores = layout.scores(row_targets, val_probs)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                  "val_loss": val_loss, "val_accuracy": val_scores["accuracy"], "val_macro_f1": val_scores["macro_f1"]}
        for head, head_scores in val_scores.get("heads", {}).items():
            record.update({f"val_{head}_accuracy": head_scores["accuracy"], f"val_{head}_macro_f1": head_scores["macro_f1"]})
        record.update(lr=optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - started)
        history.append(record)
        if metrics_path is not None:
            with metrics_path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")

        # --- keep the best, decide whether to stop
        value = record[config.monitor]
        if best is None:
            improved = True
        else:
            gain = best.best_value - value if lower_is_better else value - best.best_value
            improved = gain > config.min_delta
        if improved:
            state = {key: tensor.detach().to("cpu", copy=True) for key, tensor in kept.state_dict().items()}
            best = FitResult(best_epoch=epoch + 1, best_value=value, best_state=state, val_probs=val_probs,
                             val_rows=val_rows)
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
        per_head = "".join(f"  {head} {s['macro_f1']:.3f}" for head, s in val_scores.get("heads", {}).items())
        log.info("%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f  val_f1 %.4f%s  lr %.2e  %.1fs%s",
                 name, epoch + 1, config.epochs, record["train_loss"], val_loss, record["val_accuracy"],
                 record["val_macro_f1"], per_head, record["lr"], record["seconds"], "  *" if improved else "")
        if scheduler is not None:
            scheduler.step(epoch + 1, value)
        if config.patience and epochs_without_gain >= config.patience:
            log.info("%s stopped early: %s did not improve by more than %g for %d epochs",
                     name, config.monitor, config.min_delta, config.patience)
            best.stopped_early = True
            break

    # --- finish
    if config.freeze_epochs:
        set_backbone_frozen(model, False)
    best.history = history
    return best
