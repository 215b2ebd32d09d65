"""`fit`: one model on one split. Reads top to bottom: set-up, the epoch loop (train, validate,
log, keep the best, stop early), finish."""
from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from timm.utils import ModelEmaV3, dispatch_clip_grad
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hierclf.inference import autocast, soft_vote
from hierclf.metrics import log_loss, output_scores
from hierclf.models import set_backbone_frozen
from hierclf.recipe import StageConfig
from hierclf.train.losses import HeadsLoss, build_loss
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader, stage: StageConfig,
        device: torch.device, num_classes: int, metrics_path: Path | None = None, name: str = "",
        criterion: torch.nn.Module | None = None, heads: Sequence[tuple[str, int]] = ()) -> FitResult:
    """Train `model` for up to `stage.epochs`, validating after each epoch; the epoch with the
    best `stage.monitor` wins. With `metrics_path`, one JSON line per epoch is written there.

    `criterion` defaults to the stage's loss keys. A model with attribute `heads` (name, size)
    has targets with one column per head; its scores are the joint class's, and each head's
    are logged beside them. With `stage.ema`, the moving average is what is validated and
    kept; with `stage.freeze_epochs`, only the classifier trains in the first epochs."""
    # --- set-up
    layout = torch.channels_last if stage.channels_last else torch.contiguous_format
    model.to(device, memory_format=layout)
    optimizer = build_optimizer(model, stage)
    steps_per_epoch = math.ceil(len(train_loader) / stage.accumulate)
    scheduler = build_scheduler(optimizer, stage, updates_per_epoch=steps_per_epoch)
    if criterion is None:
        criterion = build_loss(stage, train_loader.dataset.targets, num_classes, name or "stage")
    criterion = criterion.to(device)
    head_sizes = tuple(size for _, size in heads)
    mixer = build_mixer(stage, num_classes, head_sizes)
    ema = ModelEmaV3(model, decay=stage.ema_decay, use_warmup=stage.ema_warmup) if stage.ema else None
    forward = torch.compile(model) if stage.compile else model  # shares the model's parameters
    kept = ema.module if ema is not None else model  # the weights validated and saved
    evaluated = kept if ema is not None else forward
    use_amp = stage.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    lower_is_better = stage.monitor.endswith("loss")
    val_targets = np.asarray(val_loader.dataset.targets)
    if metrics_path is not None:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("")
    best: FitResult | None = None
    epochs_without_gain = 0
    updates = 0
    history: list[dict] = []

    for epoch in range(stage.epochs):
        # --- train one epoch
        started = time.perf_counter()
        if isinstance(criterion, HeadsLoss):
            criterion.set_epoch(epoch + 1)
        model.train()
        if stage.freeze_epochs:
            set_backbone_frozen(model, epoch < stage.freeze_epochs)
        loss_sum, correct, seen = 0.0, 0, 0
        optimizer.zero_grad(set_to_none=True)
        batches = tqdm(train_loader, desc=f"{name} epoch {epoch + 1}/{stage.epochs}", leave=False, disable=None)
        for batch, (images, targets, _) in enumerate(batches, start=1):
            images = images.to(device, non_blocking=True, memory_format=layout)
            targets = targets.to(device, non_blocking=True)
            # mixed images learn mixed targets; accuracy is still counted against the true ones
            images, learned = mixer(images, targets) if mixer is not None else (images, targets)
            with autocast(device, use_amp):
                logits = forward(images)
                loss = criterion(logits.float(), learned)
            # each batch adds its share of the step's mean loss; the step comes after `accumulate`
            # batches, or after the epoch's last (a short last group then counts for less)
            scaler.scale(loss / stage.accumulate).backward()
            if batch % stage.accumulate == 0 or batch == len(train_loader):
                if stage.clip_grad:
                    scaler.unscale_(optimizer)
                    dispatch_clip_grad(model.parameters(), stage.clip_grad, mode=stage.clip_mode)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                updates += 1
                if ema is not None:
                    ema.update(model, step=updates)
                if scheduler is not None:
                    scheduler.step_update(updates)
            loss_sum += loss.item() * len(targets)
            correct += _correct(logits.detach(), targets, head_sizes)
            seen += len(targets)

        # --- validate
        val_probs, val_rows = soft_vote([evaluated], val_loader, device, use_amp, head_sizes)
        row_targets = val_targets[val_rows]
        val_loss = log_loss(row_targets, val_probs, heads)
        val_scores = output_scores(row_targets, val_probs, num_classes, heads)
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
        value = record[stage.monitor]
        if best is None:
            improved = True
        else:
            gain = best.best_value - value if lower_is_better else value - best.best_value
            improved = gain > stage.min_delta
        if improved:
            state = {key: tensor.detach().to("cpu", copy=True) for key, tensor in kept.state_dict().items()}
            best = FitResult(best_epoch=epoch + 1, best_value=value, best_state=state, val_probs=val_probs,
                             val_rows=val_rows)
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
        per_head = "".join(f"  {head} {s['macro_f1']:.3f}" for head, s in val_scores.get("heads", {}).items())
        log.info("%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f  val_f1 %.4f%s  lr %.2e  %.1fs%s",
                 name, epoch + 1, stage.epochs, record["train_loss"], val_loss, record["val_accuracy"],
                 record["val_macro_f1"], per_head, record["lr"], record["seconds"], "  *" if improved else "")
        if scheduler is not None:
            scheduler.step(epoch + 1, value)
        if stage.patience and epochs_without_gain >= stage.patience:
            log.info("%s stopped early: %s did not improve by more than %g for %d epochs",
                     name, stage.monitor, stage.min_delta, stage.patience)
            best.stopped_early = True
            break

    # --- finish
    if stage.freeze_epochs:
        set_backbone_frozen(model, False)
    best.history = history
    return best


def _correct(logits: torch.Tensor, targets: torch.Tensor, head_sizes: Sequence[int]) -> int:
    """Rows predicted right: the argmax, or with heads every head's argmax."""
    if not head_sizes:
        return int((logits.argmax(1) == targets).sum().item())
    hits = [block.argmax(1) == column for block, column in zip(logits.split(tuple(head_sizes), 1), targets.unbind(1))]
    return int(torch.stack(hits, 1).all(1).sum().item())
