"""`fit`: one model on one split. Reads top to bottom: set-up, the epoch loop (train, validate,
log, keep the best, stop early), finish."""
from __future__ import annotations

import contextlib
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

from hierclf.runtime.processes import Processes
from hierclf.errors import TrainingError
from hierclf.models.inference import autocast, soft_vote
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.factory import set_backbone_frozen
from hierclf.recipe.schema import TrainConfig
from hierclf.seeding import torch_seeded
from hierclf.train.losses import LayoutLoss
from hierclf.train.mixing import build_mixer
from hierclf.train.checkpoint import (Checkpoint, load_checkpoint, numpy_state, numpy_state_back, optimizer_parts,
                                      python_random_state, python_random_state_back, restore_optimizer,
                                      save_checkpoint)
from hierclf.train.optim import build_optimizer, build_scheduler, scaled_lr

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
        metrics_path: Path | None = None, name: str = "", resume_path: Path | None = None,
        processes: Processes = Processes()) -> FitResult:
    """Train `model` for up to `config.epochs`, validating after each epoch; the epoch with the
    best `config.monitor` wins. With `metrics_path`, one JSON line per epoch is written there.

    The model's outputs and the loaders' targets (N×H) follow `layout`; scores are the joint
    class's, and with several blocks each block's are logged beside them. With `config.ema`, the
    moving average is what is validated and kept; with `config.freeze_epochs`, only the
    classifier trains in the first epochs. What draws from torch's global generator (dropout) or
    numpy's (mixup) is seeded with `seed` and leaves both generators as they were.

    With `resume_path`, the whole training state is saved there after every epoch but the last
    (`hierclf.train.checkpoint`), and a fit that finds one there resumes after its epoch: with
    the loader in the main process (workers = 0) it ends exactly as an uninterrupted fit.

    With several `processes` (torchrun), each runs this on its share of every batch (the
    loaders' shards) and of the validation rows; gradients are averaged in DistributedDataParallel
    and the epoch's sums and validation outputs joined, so every process logs the same scores
    and takes the same best-epoch and stopping decisions. Rank 0 alone writes the files."""
    with torch_seeded(processes.seed(seed)):
        return _fit(model, train_loader, val_loader, config, device, layout, criterion, seed, metrics_path, name,
                    resume_path, processes)


def _fit(model: torch.nn.Module, train_loader: DataLoader, val_loader: DataLoader, config: TrainConfig,
         device: torch.device, layout: OutputLayout, criterion: LayoutLoss, seed: int, metrics_path: Path | None,
         name: str, resume_path: Path | None, processes: Processes) -> FitResult:
    # --- set-up
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    if config.sync_batchnorm:
        processes.sync_batchnorm(model)
    images_per_step = (train_loader.batch_size or 0) * processes.world * config.accumulate
    optimizer = build_optimizer(model, config, images_per_step)
    if config.lr_base_batch:
        log.info("%s: lr %.3g for steps of %d images (lr %g at %d)", name, scaled_lr(config, images_per_step),
                 images_per_step, config.lr, config.lr_base_batch)
    steps_per_epoch = math.ceil(len(train_loader) / config.accumulate)
    scheduler = build_scheduler(optimizer, config, updates_per_epoch=steps_per_epoch)
    criterion = criterion.to(device)
    mixer = build_mixer(config, layout, processes.seed(seed))
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup) if config.ema else None
    forward = torch.compile(model) if config.compile else model  # shares the model's parameters
    kept = ema.module if ema is not None else model  # the weights validated and saved
    evaluated = kept if ema is not None or processes.active else forward
    together, together_frozen = None, None  # DistributedDataParallel, and whether it was built frozen
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    lower_is_better = config.monitor.endswith("loss")
    val_targets = np.asarray(val_loader.dataset.targets)
    best: FitResult | None = None
    epochs_without_gain = 0
    updates = 0
    history: list[dict] = []
    saved = load_checkpoint(resume_path) if resume_path is not None else None
    if saved is not None:
        best, epochs_without_gain, updates, history = _restore(saved, model, ema, optimizer, scheduler, scaler, mixer,
                                                               train_loader, own_draws=processes.is_main)
        log.info("%s: resuming after epoch %d of %d", name, saved.epoch, config.epochs)
    if not processes.is_main:
        metrics_path = resume_path = None  # read the checkpoint, as every process does; write nothing
    if metrics_path is not None:  # the epochs done so far, once each
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text("".join(json.dumps(record) + "\n" for record in history))

    for epoch in range(len(history), config.epochs):
        # --- train one epoch
        started = time.perf_counter()
        criterion.set_epoch(epoch + 1)
        model.train()
        frozen = epoch < config.freeze_epochs
        if config.freeze_epochs:
            set_backbone_frozen(model, frozen)
        if processes.active and frozen != together_frozen:
            # it averages the gradients of the parameters that train when it is built
            together, together_frozen = processes.wrap(model, device), frozen
            forward = torch.compile(together) if config.compile else together
        loss_sum, correct, seen = 0.0, 0, 0
        optimizer.zero_grad(set_to_none=True)
        batches = tqdm(train_loader, desc=f"{name} epoch {epoch + 1}/{config.epochs}", leave=False,
                       disable=None if processes.is_main else True)
        for batch, (images, targets, _) in enumerate(batches, start=1):
            images = images.to(device, non_blocking=True, memory_format=memory_format)
            targets = targets.to(device, non_blocking=True)
            # mixed images learn mixed targets; accuracy is still counted against the true ones
            images, learned = mixer(images, targets) if mixer is not None else (images, targets)
            # each batch adds its share of the step's mean loss; the step comes after `accumulate`
            # batches, or after the epoch's last (a short last group then counts for less)
            stepping = batch % config.accumulate == 0 or batch == len(train_loader)
            # processes average their gradients only before a step, not after every batch
            with together.no_sync() if together is not None and not stepping else contextlib.nullcontext():
                with autocast(device, use_amp):
                    logits = forward(images)
                    loss = criterion(logits.float(), learned)
                scaler.scale(loss / config.accumulate).backward()
            if stepping:
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
            # summed over the processes every batch, so all of them stop together on a bad loss
            batch_loss, batch_correct, batch_seen = processes.all_sum(
                [loss.item() * len(targets), layout.correct(logits.detach(), targets), len(targets)])
            if not math.isfinite(batch_loss):
                raise TrainingError(f"{name} epoch {epoch + 1}, batch {batch}: the loss is {batch_loss / batch_seen}; "
                                    f"training diverged (lower lr, set clip_grad, or check the images)")
            loss_sum += batch_loss
            correct += int(batch_correct)
            seen += int(batch_seen)

        # --- validate
        val_probs, val_rows = processes.gather_rows(*soft_vote([evaluated], val_loader, device, layout, use_amp))
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
        stopping = config.patience and epochs_without_gain >= config.patience
        if resume_path is not None and not stopping and epoch + 1 < config.epochs:
            save_checkpoint(resume_path, _checkpoint(epoch + 1, model, ema, best, optimizer, scheduler, scaler, mixer,
                                                     train_loader, history, epochs_without_gain, updates))
        if stopping:
            log.info("%s stopped early: %s did not improve by more than %g for %d epochs",
                     name, config.monitor, config.min_delta, config.patience)
            best.stopped_early = True
            break

    # --- finish
    if config.freeze_epochs:
        set_backbone_frozen(model, False)
    best.history = history
    return best


def _augmentation(loader: DataLoader) -> list:
    """The albumentations pipeline the training loader draws augmentations from, and each of its
    transforms, nested ones included: each keeps generators of its own."""
    pipeline = getattr(getattr(getattr(loader, "dataset", None), "transform", None), "pipeline", None)
    found, waiting = [], [pipeline] if pipeline is not None else []
    while waiting:
        transform = waiting.pop(0)
        if hasattr(transform, "random_generator") and hasattr(transform, "py_random"):
            found.append(transform)
        waiting.extend(getattr(transform, "transforms", []) or [])
    return found


def _checkpoint(epochs_done: int, model: torch.nn.Module, ema: ModelEmaV3 | None, best: FitResult,
                optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler, mixer,
                train_loader: DataLoader, history: list[dict], epochs_without_gain: int, updates: int) -> Checkpoint:
    """Everything the next epoch depends on, after `epochs_done` epochs."""
    tensors = {f"model/{key}": value for key, value in model.state_dict().items()}
    tensors.update({f"best/{key}": value for key, value in best.best_state.items()})
    tensors.update(best_val_probs=torch.from_numpy(np.ascontiguousarray(best.val_probs)),
                   best_val_rows=torch.from_numpy(np.ascontiguousarray(best.val_rows)))
    if ema is not None:
        tensors.update({f"ema/{key}": value for key, value in ema.module.state_dict().items()})
    optimizer_tensors, optimizer_numbers = optimizer_parts(optimizer)
    tensors.update(optimizer_tensors)
    tensors["rng/torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng/cuda/{index}": state for index, state in enumerate(torch.cuda.get_rng_state_all())})
    if train_loader.generator is not None:
        tensors["rng/loader"] = train_loader.generator.get_state()
    augmentation = _augmentation(train_loader)
    state = {"history": history, "best_epoch": best.best_epoch, "best_value": best.best_value,
             "epochs_without_gain": epochs_without_gain, "updates": updates, "optimizer": optimizer_numbers,
             "scheduler": scheduler.state_dict() if scheduler is not None else None,
             "scaler": scaler.state_dict() if scaler.is_enabled() else None,
             "mixer": numpy_state(mixer.random.get_state()) if mixer is not None else None,
             "augmentation": [{"numpy": transform.random_generator.bit_generator.state,
                               "python": python_random_state(transform.py_random.getstate())}
                              for transform in augmentation]}
    return Checkpoint(epoch=epochs_done, tensors=tensors, state=state)


def _restore(saved: Checkpoint, model: torch.nn.Module, ema: ModelEmaV3 | None, optimizer: torch.optim.Optimizer,
             scheduler, scaler: torch.amp.GradScaler, mixer, train_loader: DataLoader, own_draws: bool = True
             ) -> tuple[FitResult, int, int, list[dict]]:
    """Put every piece back as it was after `saved.epoch` epochs. Without `own_draws` (a process
    other than rank 0, which saved the file) the augmentation, mixup and dropout generators keep
    their fresh seeds: rank 0's would make every process draw alike."""
    state = saved.state
    model.load_state_dict(saved.group("model"))
    if ema is not None:
        ema.module.load_state_dict(saved.group("ema"))
    restore_optimizer(optimizer, saved)
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if own_draws:
        _restore_draws(saved, mixer, train_loader)
    if train_loader.generator is not None and "rng/loader" in saved.tensors:
        train_loader.generator.set_state(saved.tensors["rng/loader"])
    best = FitResult(best_epoch=state["best_epoch"], best_value=state["best_value"], best_state=saved.group("best"),
                     val_probs=saved.tensors["best_val_probs"].numpy(), val_rows=saved.tensors["best_val_rows"].numpy())
    return best, state["epochs_without_gain"], state["updates"], state["history"]


def _restore_draws(saved: Checkpoint, mixer, train_loader: DataLoader) -> None:
    """The generators of augmentation, mixup and dropout as they were after `saved.epoch` epochs."""
    state = saved.state
    if mixer is not None and state["mixer"] is not None:
        mixer.random.set_state(numpy_state_back(state["mixer"]))
    for transform, generators in zip(_augmentation(train_loader), state["augmentation"]):
        transform.random_generator.bit_generator.state = generators["numpy"]
        transform.py_random.setstate(python_random_state_back(generators["python"]))
    torch.set_rng_state(saved.tensors["rng/torch"])
    cuda = saved.group("rng/cuda")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda[str(index)] for index in range(len(cuda))])
