"""`fit`: one model on one split. Reads top to bottom: set-up, the epoch loop (train, validate,
log, keep the best, stop early), finish."""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from hierclf.inference import autocast, soft_vote
from hierclf.metrics import scores
from hierclf.recipe import StageConfig
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
        device: torch.device, num_classes: int, metrics_path: Path | None = None, name: str = "") -> FitResult:
    """Train `model` for up to `stage.epochs`, validating after each epoch; the epoch with the
    best `stage.monitor` wins. With `metrics_path`, one JSON line per epoch is written there."""
    # --- set-up
    model.to(device)
    optimizer = build_optimizer(model, stage)
    scheduler = build_scheduler(optimizer, stage, updates_per_epoch=len(train_loader))
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=stage.label_smoothing)
    use_amp = stage.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    lower_is_better = stage.monitor.endswith("loss")
    val_targets = torch.as_tensor(val_loader.dataset.targets)
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
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        batches = tqdm(train_loader, desc=f"{name} epoch {epoch + 1}/{stage.epochs}", leave=False, disable=None)
        for images, targets, _ in batches:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with autocast(device, use_amp):
                logits = model(images)
                loss = criterion(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            updates += 1
            if scheduler is not None:
                scheduler.step_update(updates)
            loss_sum += loss.item() * len(targets)
            correct += (logits.argmax(1) == targets).sum().item()
            seen += len(targets)

        # --- validate
        val_probs, val_rows = soft_vote([model], val_loader, device, use_amp)
        row_targets = val_targets[val_rows]
        val_loss = torch.nn.functional.nll_loss(torch.log(torch.as_tensor(val_probs).clamp_min(1e-12)),
                                                row_targets).item()
        val_scores = scores(row_targets.numpy(), val_probs.argmax(1), num_classes)
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                  "val_loss": val_loss, "val_accuracy": val_scores["accuracy"], "val_macro_f1": val_scores["macro_f1"],
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
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
            state = {key: tensor.detach().to("cpu", copy=True) for key, tensor in model.state_dict().items()}
            best = FitResult(best_epoch=epoch + 1, best_value=value, best_state=state, val_probs=val_probs,
                             val_rows=val_rows)
            epochs_without_gain = 0
        else:
            epochs_without_gain += 1
        log.info("%s epoch %d/%d  train_loss %.4f  val_loss %.4f  val_acc %.4f  val_f1 %.4f  lr %.2e  %.1fs%s",
                 name, epoch + 1, stage.epochs, record["train_loss"], val_loss, record["val_accuracy"],
                 record["val_macro_f1"], record["lr"], record["seconds"], "  *" if improved else "")
        if scheduler is not None:
            scheduler.step(epoch + 1, value)
        if stage.patience and epochs_without_gain >= stage.patience:
            log.info("%s stopped early: %s did not improve by more than %g for %d epochs",
                     name, stage.monitor, stage.min_delta, stage.patience)
            best.stopped_early = True
            break

    # --- finish
    best.history = history
    return best
