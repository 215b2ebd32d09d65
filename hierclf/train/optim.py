"""Optimiser and learning-rate schedule of a stage, built by timm's factories."""
from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from hierclf.recipe import StageConfig

_MANY_CYCLES = 10_000


def build_optimizer(model: torch.nn.Module, stage: StageConfig) -> torch.optim.Optimizer:
    """timm leaves biases and norm weights out of weight decay, as it should."""
    extra = {"momentum": stage.momentum} if stage.optimizer == "sgd" else {}
    return create_optimizer_v2(model, opt=stage.optimizer, lr=stage.lr, weight_decay=stage.weight_decay, **extra)


def build_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig) -> Scheduler | None:
    """A per-epoch schedule: `scheduler.step(epoch + 1, metric)` after each epoch."""
    warmup = dict(warmup_epochs=stage.warmup_epochs, warmup_lr=stage.warmup_lr)
    if stage.scheduler == "cosine":
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=stage.epochs, min_lr=stage.min_lr, **warmup)
    elif stage.scheduler == "cosine_restarts":
        # SGDR, as torch's CosineAnnealingWarmRestarts(T_0, T_mult, eta_min): cycles of
        # restart_epochs × restart_mult^k epochs, each restarting at the full learning rate.
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=stage.restart_epochs,
                                           cycle_mul=stage.restart_mult, cycle_decay=1.0,
                                           cycle_limit=_MANY_CYCLES, min_lr=stage.min_lr, **warmup)
    elif stage.scheduler == "step":
        scheduler, _ = create_scheduler_v2(optimizer, "step", decay_epochs=stage.step_epochs,
                                           decay_rate=stage.decay_rate, **warmup)
    elif stage.scheduler == "plateau":
        scheduler, _ = create_scheduler_v2(optimizer, "plateau", patience_epochs=stage.plateau_patience,
                                           decay_rate=stage.decay_rate, min_lr=stage.min_lr,
                                           plateau_mode="min" if stage.monitor.endswith("loss") else "max",
                                           **warmup)
    elif stage.warmup_epochs:
        scheduler, _ = create_scheduler_v2(optimizer, "constant", **warmup)
    else:
        scheduler = None
    return scheduler
