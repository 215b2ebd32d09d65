"""Where a training step's time goes: hierclf's `fit` against the bare loop, phase by phase.

`speed_train.py` says how fast each loop is; this says why they differ. One epoch of each loop
(the same model, weights, batches and optimiser as speed_train.py) runs under torch.profiler,
the model's and the loss's forward labelled by hooks, and the profiler's top-level events are
summed into phases: waiting for the next batch, the forward pass, the loss, the backward pass,
the optimiser's step and zero_grad, every other torch op of the step (copies, `.item()`, the
accuracy count), Python between ops, and validation with the epoch's bookkeeping. Figures are
milliseconds per training batch, the profiler's own cost included on both sides.

    python benchmarks/profile_step.py --source memory
    python benchmarks/profile_step.py --source files --rounds 3
"""
from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import timm
import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from harness import benchmark_parser
from hierclf import (FASHION_MNIST_CLASSES, fit, HeadConfig, Items, OutputLayout, Placement,
                    read_fashion_mnist, StageConfig)
from hierclf.train.losses import build_layout_loss
from speed_train import bare_fit, bare_loaders, hierclf_loaders, write_jpegs

PHASES = ("next batch", "forward", "loss", "backward", "optimizer step", "zero_grad", "other torch ops",
          "python between ops")


def label_forward(module: torch.nn.Module, name: str) -> None:
    """Put each forward call of `module` inside a profiler range named after `name` and the mode."""
    opened: list[record_function] = []

    def enter(mod: torch.nn.Module, inputs: object) -> None:
        scope = record_function(f"{name} ({'train' if mod.training else 'eval'})")
        scope.__enter__()
        opened.append(scope)

    def leave(mod: torch.nn.Module, inputs: object, output: object) -> None:
        opened.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def phase_of(name: str) -> str:
    """The phase a top-level profiler event belongs to."""
    if "DataLoader" in name:
        return "next batch"
    if name.startswith("model (train)"):
        return "forward"
    if name.startswith("loss (train)"):
        return "loss"
    if name.startswith("autograd::engine"):
        return "backward"
    if name.startswith("Optimizer.step"):
        return "optimizer step"
    if name.startswith("Optimizer.zero_grad"):
        return "zero_grad"
    return "other torch ops"


def phases(prof: profile, batches: int) -> dict[str, float]:
    """Milliseconds per training batch in each phase. Training ends with the last optimiser step
    that precedes the first evaluation forward; what follows, to the end of the epoch, is
    validation and bookkeeping."""
    epoch = next(event for event in prof.events() if event.name == "epoch")
    events = [event for event in prof.events() if event.cpu_parent is epoch]  # the epoch's outermost
    first_eval = min(event.time_range.start for event in events if event.name.startswith("model (eval)"))
    last_step = max(event.time_range.end for event in events
                    if event.name.startswith("Optimizer.step") and event.time_range.end <= first_eval)
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.time_range.end <= last_step:
            totals[phase_of(event.name)] += event.time_range.elapsed_us()
    training_us = last_step - epoch.time_range.start
    totals["python between ops"] = training_us - sum(totals.values())
    totals["validation and epoch end"] = epoch.time_range.end - last_step
    totals["whole epoch"] = epoch.time_range.elapsed_us()
    return {phase: microseconds / 1000 / batches for phase, microseconds in totals.items()}


def profiled_epoch(loop: str, items: Items, train_rows: np.ndarray, val_rows: np.ndarray, stage: StageConfig,
                   initial: dict, source: str) -> dict[str, float]:
    device = torch.device("cpu")
    model = timm.create_model(stage.model, num_classes=10, in_chans=1)
    model.load_state_dict(initial)
    label_forward(model, "model")
    if loop == "bare":
        train, val = bare_loaders(items, train_rows, val_rows, stage, source, device)
    else:
        train, val = hierclf_loaders(items, train_rows, val_rows, stage, device)
        loss = build_layout_loss(OutputLayout.single(FASHION_MNIST_CLASSES), [HeadConfig()], ["coarse"],
                                 items.labels[train_rows, None])
        label_forward(loss, "loss")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function("epoch"):
            if loop == "bare":
                bare_fit(model, train, val, stage, device, criterion=label_loss())
            else:
                fit(model, train, val, stage, loss, Placement(device))
    return phases(prof, len(train))


def label_loss() -> torch.nn.Module:
    criterion = torch.nn.CrossEntropyLoss()
    label_forward(criterion, "loss")
    return criterion


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--source", choices=["memory", "files"], default="memory")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="alternating profiled epochs of each loop; the "
                        "fastest epoch of each is shown")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    images, labels, _ = read_fashion_mnist("train", limit=args.rows)
    rows = np.arange(len(labels))
    train_rows, val_rows = rows[rows % 5 != 0], rows[rows % 5 == 0]
    workers = 0 if args.source == "memory" else 2
    stage = StageConfig(model=args.model, img_size=args.img_size, in_chans=1, batch_size=args.batch_size, epochs=1,
                        lr=1e-3, weight_decay=1e-4, scheduler="none", workers=workers, amp=False)
    torch.manual_seed(0)
    initial = timm.create_model(args.model, num_classes=10, in_chans=1).state_dict()
    best: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        items = (Items.from_arrays(images, labels, FASHION_MNIST_CLASSES) if args.source == "memory"
                 else write_jpegs(images, labels, Path(folder)))
        for _ in range(args.rounds):
            for loop in ("bare", "hierclf"):
                figures = profiled_epoch(loop, items, train_rows, val_rows, stage, initial, args.source)
                if loop not in best or figures["whole epoch"] < best[loop]["whole epoch"]:
                    best[loop] = figures
    print(f"ms per training batch ({args.model}, {args.img_size} px, batch {args.batch_size}, "
          f"{len(train_rows)} training rows, {args.source}, {workers} workers; fastest of {args.rounds} "
          f"profiled epochs each)")
    print(f"{'phase':<26}{'bare':>9}{'hierclf':>9}{'difference':>12}")
    for phase in (*PHASES, "validation and epoch end", "whole epoch"):
        bare, ours = best["bare"].get(phase, 0.0), best["hierclf"].get(phase, 0.0)
        print(f"{phase:<26}{bare:9.2f}{ours:9.2f}{ours - bare:+12.2f}")


if __name__ == "__main__":
    main()
