"""Which cheap measurement chooses the rate a recipe should train at? `lr = "auto"` with
`batchnorm = "auto"` (short runs at a ladder of rates for each BatchNorm mode on fold 0's
training rows, scored on held-out rows of them) against an lr
range test (fastai's lr_find: one pass with the rate growing exponentially, the loss smoothed,
the rate chosen where it falls fastest, or a tenth of where it is lowest), both set beside the
fine-tuning grid's fold-0 scores at the rates it trained (docs/benchmarks.md, "Fine-tuning fitted
to the data").

    python benchmarks/lr_choice.py auto recipes/clothing.toml --out runs/lr/clothing     # fold 0, both "auto"
    python benchmarks/lr_choice.py range runs/lr/clothing                                # the range test on its fold 0
    python benchmarks/lr_choice.py train recipes/clothing.toml --out runs/lr/clothing-range --lr 2.1e-3
    python benchmarks/lr_choice.py --report runs/lr/clothing …

`auto` trains fold 0 of the recipe as committed with both "auto" (the trials and the fold);
`range` runs the range test from the same start (LP-FT's probe head where the recipe has it),
in the BatchNorm mode "auto" chose, on the same training rows, and writes range.json beside it;
`train` trains fold 0 at a given rate (to score the range test's choice, with --set
coarse.batchnorm=… as "auto" chose). Each process on one core (OMP_NUM_THREADS=1 taskset -c N).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch

from harness import benchmark_parser
from hierclf import fit_coarse, load_recipe, load_training_items, Placement, Run
from hierclf.data.cache import cached_items
from hierclf.hierarchy.build import label_attributes
from hierclf.hierarchy.stage import in_stage
from hierclf.models.factory import hold_batchnorm
from hierclf.run.files import read_json
from hierclf.train.fold import FoldLoaders, build_fold_model, starting_probe
from hierclf.train.losses import build_layout_loss
from hierclf.train.optim import build_optimizer


def range_test(run_root: Path, steps: int = 100, start: float = 1e-7, end: float = 1.0) -> dict:
    """The loss over `steps` updates on fold 0's training rows (augmented, as training sees them)
    with the rate growing from `start` to `end`, smoothed as fastai smooths it, and its two
    usual suggestions: the rate where it falls fastest, and a tenth of where it is lowest."""
    run = Run.open(run_root)
    stage = run.coarse_stage
    chosen = read_json(run.stage_dir("coarse") / "auto.json")  # the BatchNorm mode "auto" chose: the rate for it
    config = dataclasses.replace(stage.config, lr=start, batchnorm=chosen["batchnorm"])
    items = load_training_items(run.recipe.data, label_attributes(run.recipe.hierarchy), check_files=False)
    images = cached_items(items, config.img_size, config.in_chans, config.cache_mb, config.workers)
    targets = stage.targets(items.labels)
    train_rows = np.flatnonzero((run.folds.fold != 0) & in_stage(targets))
    val_rows = np.flatnonzero((run.folds.fold == 0) & in_stage(targets))
    model, spec = build_fold_model(run, dataclasses.replace(stage, config=config), 0, config.seed)
    loaders = FoldLoaders(dataclasses.replace(stage, config=config), spec, images, targets, config.seed, Placement())
    if config.head_init == "probe":
        starting_probe(dataclasses.replace(stage, config=config), model, loaders, (train_rows, val_rows))
    criterion = build_layout_loss(stage.layout, stage.losses, stage.loss_keys, targets[train_rows])
    optimizer = build_optimizer(model, config)
    rates, losses, smoothed, best = [], [], 0.0, math.inf
    batches = iter(())
    loader = loaders.of(train_rows, training=True)
    for step in range(steps):
        rate = start * (end / start) ** (step / (steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = rate
        try:
            images_, batch_targets, _ = next(batches)
        except StopIteration:
            batches = iter(loader)
            images_, batch_targets, _ = next(batches)
        model.train()
        if config.batchnorm == "frozen":
            hold_batchnorm(model)
        loss = criterion(model(images_).float(), batch_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smoothed = 0.98 * smoothed + 0.02 * float(loss)
        value = smoothed / (1 - 0.98 ** (step + 1))
        rates.append(rate)
        losses.append(value)
        best = min(best, value)
        if not math.isfinite(value) or value > 4 * best:
            break
    logs = np.log10(rates)
    slopes = np.gradient(np.asarray(losses), logs)
    steepest = rates[int(np.argmin(slopes[1:-1])) + 1] if len(rates) > 3 else rates[0]
    lowest = rates[int(np.argmin(losses))]
    return {"rates": rates, "losses": losses, "steepest": steepest, "min_tenth": lowest / 10}


def main() -> None:
    parser = benchmark_parser(__doc__, out=True)
    parser.add_argument("step", nargs="?", choices=["auto", "range", "train"])
    parser.add_argument("source", nargs="?", type=Path, help="auto, train: a recipe; range: a run folder")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--report", type=Path, nargs="+", metavar="RUN")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    if args.report:
        for root in args.report:
            choice = read_json(root / "coarse" / "auto.json")
            tested = read_json(root / "range.json") if (root / "range.json").exists() else {}
            result = root / "coarse" / "fold-0" / "result.json"
            fold = read_json(result) if result.exists() else {"val_macro_f1": math.nan}  # the choice alone
            trials = ", ".join(f"{trial['batchnorm']} {trial['lr']:g} {trial[choice['monitor']]:.4f}"
                               for trial in choice["trials"])
            print(f"| {root.name} | {choice['batchnorm']} {choice['lr']:g} | {fold['val_macro_f1']:.4f} | {trials} | "
                  f"{choice['seconds']:.0f} | {tested.get('steepest', math.nan):.2g} | "
                  f"{tested.get('min_tenth', math.nan):.2g} |")
    elif args.step == "auto":
        fit_coarse(load_recipe(args.source, [*args.overrides, "coarse.lr=auto", "coarse.batchnorm=auto"]), args.out,
                   only_fold=0)
    elif args.step == "train":
        fit_coarse(load_recipe(args.source, [*args.overrides, f"coarse.lr={args.lr}"]), args.out, only_fold=0)
    else:
        result = range_test(args.source)
        (args.source / "range.json").write_text(json.dumps(result, indent=1) + "\n")
        print(f"steepest {result['steepest']:.3g}, a tenth of the lowest {result['min_tenth']:.3g}")


if __name__ == "__main__":
    main()
