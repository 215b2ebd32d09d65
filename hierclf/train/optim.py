"""Optimiser and learning-rate schedule of a stage, built by timm's factories."""
from __future__ import annotations

import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from hierclf.models import classifier_modules
from hierclf.recipe import StageConfig


def build_optimizer(model: torch.nn.Module, stage: StageConfig) -> torch.optim.Optimizer:
    """timm leaves biases and norm weights out of weight decay, as it should. timm's `sgd` is
    Nesterov SGD, which needs momentum; with momentum 0 the stage gets plain SGD (`momentum`
    in timm's names is SGD without Nesterov). With `backbone_lr` ≠ 1 the backbone's groups start
    at lr × backbone_lr; the schedules scale every group from its own start."""
    opt, extra = stage.optimizer, {}
    if stage.optimizer == "sgd":
        opt, extra = ("sgd" if stage.momentum > 0 else "momentum"), {"momentum": stage.momentum}
    grouping = _backbone_lr_groups(stage) if stage.backbone_lr != 1.0 else None
    return create_optimizer_v2(model, opt=opt, lr=stage.lr, weight_decay=stage.weight_decay,
                               param_group_fn=grouping, **extra)


def _backbone_lr_groups(stage: StageConfig):
    """timm's weight-decay groups, each split into backbone and head, the backbone's at a lower lr."""
    def groups(model: torch.nn.Module) -> list[dict]:
        head_ids = {id(p) for module in classifier_modules(model) for p in module.parameters()}
        skip = getattr(model, "no_weight_decay", lambda: set())()
        result = []
        for group in param_groups_weight_decay(model, stage.weight_decay, no_weight_decay_list=skip):
            for is_head in (False, True):
                chosen = [p for p in group["params"] if (id(p) in head_ids) == is_head]
                if chosen:
                    result.append({**group, "params": chosen, "lr": stage.lr * (1.0 if is_head else stage.backbone_lr)})
        return result
    return groups


def build_scheduler(optimizer: torch.optim.Optimizer, stage: StageConfig,
                    updates_per_epoch: int = 1) -> Scheduler | PlateauSchedule | None:
    """The stage's schedule, advanced after every optimiser update with `step_update(n)` and
    after every epoch with `step(epoch, metric)`. Stepping per update keeps warm-up and cosine
    smooth inside an epoch: a one-epoch warm-up ramps up during the first epoch instead of
    spending it at `warmup_lr`. Plateau decisions are taken once per epoch."""
    updates_per_epoch = max(1, updates_per_epoch)
    per_update = dict(warmup_epochs=stage.warmup_epochs, warmup_lr=stage.warmup_lr, step_on_epochs=False,
                      updates_per_epoch=updates_per_epoch)
    if stage.scheduler == "cosine":
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=stage.epochs, min_lr=stage.min_lr,
                                           **per_update)
    elif stage.scheduler == "cosine_restarts":
        # SGDR, as torch's CosineAnnealingWarmRestarts(T_0, T_mult, eta_min): cycles of
        # restart_epochs × restart_mult^k epochs, each restarting at the full learning rate.
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=stage.restart_epochs,
                                           cycle_mul=stage.restart_mult, cycle_decay=1.0,
                                           cycle_limit=_cycles_to_cover(stage), min_lr=stage.min_lr, **per_update)
    elif stage.scheduler == "step":
        scheduler, _ = create_scheduler_v2(optimizer, "step", decay_epochs=stage.step_epochs,
                                           decay_rate=stage.decay_rate, **per_update)
    elif stage.scheduler == "plateau":
        scheduler = PlateauSchedule(optimizer, stage, updates_per_epoch)
    elif stage.warmup_epochs:
        scheduler, _ = create_scheduler_v2(optimizer, "constant", **per_update)
    else:
        scheduler = None
    return scheduler


def _cycles_to_cover(stage: StageConfig) -> int:
    """How many warm-restart cycles the run's epochs reach into (timm needs a finite count)."""
    cycles, length, covered = 0, float(stage.restart_epochs), 0.0
    while covered < stage.epochs:
        covered += length
        length *= stage.restart_mult
        cycles += 1
    return cycles + 1


class PlateauSchedule:
    """PyTorch's ReduceLROnPlateau behind the `step_update(n)` / `step(epoch, metric)` calls of
    timm's schedulers, with the same linear warm-up per update. (timm deprecates its own plateau
    scheduler.)"""

    def __init__(self, optimizer: torch.optim.Optimizer, stage: StageConfig, updates_per_epoch: int = 1):
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.warmup_updates = stage.warmup_epochs * updates_per_epoch
        self.warmup_epochs, self.warmup_lr = stage.warmup_epochs, stage.warmup_lr
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min" if stage.monitor.endswith("loss") else "max", factor=stage.decay_rate,
            patience=stage.plateau_patience, min_lr=stage.min_lr)
        if self.warmup_updates:
            self.step_update(0)

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        if self.warmup_updates and num_updates <= self.warmup_updates:
            fraction = num_updates / self.warmup_updates
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = self.warmup_lr + (base - self.warmup_lr) * fraction

    def step(self, epoch: int, metric: float | None = None) -> None:
        if epoch > self.warmup_epochs:
            self.plateau.step(metric)
