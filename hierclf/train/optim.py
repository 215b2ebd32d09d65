"""Optimiser and learning-rate schedule of a stage, built by timm's factories."""
from __future__ import annotations

import math

import torch
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler

from hierclf.models.factory import classifier_modules, layer_scales
from hierclf.recipe.schema import OptimizerConfig, TrainConfig, lower_is_better


def build_optimizer(model: torch.nn.Module, config: OptimizerConfig, images_per_step: int = 0,
                    unfreezes: bool = False) -> torch.optim.Optimizer:
    """timm leaves biases and norm weights out of weight decay, as it should. timm's `sgd` is
    Nesterov SGD, which needs momentum; with momentum 0 the stage gets plain SGD (`momentum`
    in timm's names is SGD without Nesterov). The peak rate is `scaled_lr`. With `backbone_lr`
    ≠ 1 the backbone's groups start at that rate × backbone_lr, and with `layer_decay` < 1 each
    of its layers below the top at layer_decay times the one above; the heads keep the rate. The
    schedules scale every group from its own start. The backbone's groups are marked
    (`backbone`), and with `unfreezes` (a head-only start) kept apart from the heads' even at one
    rate, so its warm-up after the unfreeze (`UnfreezeWarmup`) can reach them alone."""
    opt, extra = config.optimizer, {}
    if config.optimizer == "sgd":
        opt, extra = ("sgd" if config.momentum > 0 else "momentum"), {"momentum": config.momentum}
    lr = scaled_lr(config, images_per_step)
    split = unfreezes or config.backbone_lr != 1.0 or config.layer_decay != 1.0
    grouping = _backbone_lr_groups(config, lr) if split else None
    return create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=config.weight_decay,
                               param_group_fn=grouping, **extra)


def scaled_lr(config: OptimizerConfig, images_per_step: int) -> float:
    """The peak learning rate for steps of `images_per_step` images: `lr` as written, or with
    `lr_base_batch` scaled from that many images to these, linearly for SGD and by the square
    root for Adam's kind (whose updates do not grow with the gradient's size)."""
    if not config.lr_base_batch or not images_per_step:
        return config.lr
    ratio = images_per_step / config.lr_base_batch
    return config.lr * (ratio if config.optimizer == "sgd" else math.sqrt(ratio))


def _backbone_lr_groups(config: OptimizerConfig, lr: float):
    """timm's weight-decay groups, each split by rate: the heads at lr, the backbone's layers at
    lr × backbone_lr × their layer-wise decay."""
    def groups(model: torch.nn.Module) -> list[dict]:
        head_ids = {id(p) for module in classifier_modules(model) for p in module.parameters()}
        scales = layer_scales(model, config.layer_decay) if config.layer_decay != 1.0 else {}
        skip = getattr(model, "no_weight_decay", lambda: set())()
        result = []
        for group in param_groups_weight_decay(model, config.weight_decay, no_weight_decay_list=skip):
            by_rate: dict[tuple[bool, float], list[torch.nn.Parameter]] = {}
            for parameter in group["params"]:
                backbone = id(parameter) not in head_ids
                rate = lr * config.backbone_lr * scales.get(id(parameter), 1.0) if backbone else lr
                by_rate.setdefault((backbone, rate), []).append(parameter)
            result += [{**group, "params": chosen, "lr": rate, "backbone": backbone}
                       for (backbone, rate), chosen in sorted(by_rate.items())]
        return result
    return groups


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    updates_per_epoch: int = 1) -> Scheduler | PlateauSchedule | UnfreezeWarmup | None:
    """The schedule, advanced after every optimiser update with `step_update(n)` and
    after every epoch with `step(epoch, metric)`. Stepping per update keeps warm-up and cosine
    smooth inside an epoch: a one-epoch warm-up ramps up during the first epoch instead of
    spending it at `warmup_lr`. Plateau decisions are taken once per epoch."""
    updates_per_epoch = max(1, updates_per_epoch)
    per_update = dict(warmup_epochs=config.warmup_epochs, warmup_lr=config.warmup_lr, step_on_epochs=False,
                      updates_per_epoch=updates_per_epoch)
    if config.scheduler == "cosine":
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=config.epochs, min_lr=config.min_lr,
                                           **per_update)
    elif config.scheduler == "cosine_restarts":
        # SGDR, as torch's CosineAnnealingWarmRestarts(T_0, T_mult, eta_min): cycles of
        # restart_epochs × restart_mult^k epochs, each restarting at the full learning rate.
        scheduler, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=config.restart_epochs,
                                           cycle_mul=config.restart_mult, cycle_decay=1.0,
                                           cycle_limit=_cycles_to_cover(config), min_lr=config.min_lr, **per_update)
    elif config.scheduler == "step":
        scheduler, _ = create_scheduler_v2(optimizer, "step", decay_epochs=config.step_epochs,
                                           decay_rate=config.decay_rate, **per_update)
    elif config.scheduler == "plateau":
        scheduler = PlateauSchedule(optimizer, config, updates_per_epoch)
    elif config.warmup_epochs:
        scheduler, _ = create_scheduler_v2(optimizer, "constant", **per_update)
    else:
        scheduler = None
    if config.freeze_epochs:
        return UnfreezeWarmup(scheduler, optimizer, config.freeze_epochs * updates_per_epoch, updates_per_epoch)
    return scheduler


class UnfreezeWarmup:
    """A schedule whose backbone groups (`backbone` in their param group) start again from zero
    when the head-only epochs end, and ramp linearly to the schedule's rate over the first epoch
    that trains them. Without it the backbone's first steps come at the schedule's full rate from
    an empty optimiser state (Adam's first step moves every weight by the rate itself), and the
    features the head learnt on are knocked away. The schedule it wraps (or none) always sees the
    rates unramped; the ramp follows from the update count alone, so a resumed fit resumes it."""

    def __init__(self, inner: Scheduler | PlateauSchedule | None, optimizer: torch.optim.Optimizer,
                 frozen_updates: int, ramp_updates: int):
        self.inner, self.optimizer = inner, optimizer
        self.frozen_updates, self.ramp_updates = frozen_updates, max(1, ramp_updates)
        self.updates = 0

    def step_update(self, num_updates: int, metric: float | None = None) -> None:
        self._unramp()
        if self.inner is not None:
            self.inner.step_update(num_updates)
        self.updates = num_updates
        self._ramp()

    def step(self, epoch: int, metric: float | None = None) -> None:
        self._unramp()
        if self.inner is not None:
            self.inner.step(epoch, metric)
        self._ramp()

    def _ramp(self) -> None:
        """The next update's share of the backbone's rate: 1/ramp_updates for its first."""
        share = min(1.0, max(0.0, (self.updates + 1 - self.frozen_updates) / self.ramp_updates))
        for group in self.optimizer.param_groups:
            if group.get("backbone"):
                group["scheduled_lr"] = group["lr"]
                group["lr"] = group["lr"] * share

    def _unramp(self) -> None:
        for group in self.optimizer.param_groups:
            if "scheduled_lr" in group:
                group["lr"] = group.pop("scheduled_lr")

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict() if self.inner is not None else None, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if self.inner is not None:
            self.inner.load_state_dict(state["inner"])
        self.updates = int(state["updates"])


def _cycles_to_cover(config: TrainConfig) -> int:
    """How many warm-restart cycles the run's epochs reach into (timm needs a finite count)."""
    cycles, length, covered = 0, float(config.restart_epochs), 0.0
    while covered < config.epochs:
        covered += length
        length *= config.restart_mult
        cycles += 1
    return cycles + 1


class PlateauSchedule:
    """PyTorch's ReduceLROnPlateau behind the `step_update(n)` / `step(epoch, metric)` calls of
    timm's schedulers, with the same linear warm-up per update. (timm deprecates its own plateau
    scheduler.)"""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig, updates_per_epoch: int = 1):
        self.optimizer = optimizer
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.warmup_updates = config.warmup_epochs * updates_per_epoch
        self.warmup_epochs, self.warmup_lr = config.warmup_epochs, config.warmup_lr
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min" if lower_is_better(config.monitor) else "max", factor=config.decay_rate,
            patience=config.plateau_patience, min_lr=config.min_lr)
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

    def state_dict(self) -> dict:
        return {"plateau": self.plateau.state_dict(), "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict) -> None:
        self.plateau.load_state_dict(state["plateau"])
        self.base_lrs = list(state["base_lrs"])
