"""Which fine-tuning settings keep what a pretrained backbone knows? A small grid, one fold each,
against the linear probe on the same fold: the measurement behind the fine-tuning defaults
(recipe/finetuning.py; docs/benchmarks.md, "Fine-tuning that keeps what the backbone knows").

Each setting trains fold 0 of a 3-fold run of the recipe (its data, model, size, epochs and
rate), every fine-tuning key set explicitly, so the defaults play no part; `timm-head` is the
library before its heads started at zero (timm's own classifier init, sized for 1,000 classes).
The linear probe is `hierclf probe` on the same folds. The score is fold 0's validation
macro-F1 at the best epoch (and at the last), never the test set: the defaults are chosen here.

    python benchmarks/finetune_grid.py recipes/clothing.toml --out runs/grid/clothing
    python benchmarks/finetune_grid.py recipes/fashion-mnist-lite0.toml --out runs/grid/fashion-6k \\
        --set data.csv=data/fashion-mnist-6k/train.csv
    python benchmarks/finetune_grid.py recipes/clothing.toml --out runs/grid/clothing --setting lr3x …  # round 2
    python benchmarks/finetune_grid.py --report runs/grid/clothing runs/grid/faces runs/grid/fashion-6k

One process per recipe, each on one core (OMP_NUM_THREADS=1 taskset -c N). Rounds 1 and 2 ran with
loader workers 0; round 3 runs each recipe's own (2), so its as-is row is what the recipe gives.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from unittest import mock

from harness import benchmark_parser, recipe_of
from hierclf import fit_coarse, linear_probe, read_history

AS_LOADED = {"freeze_epochs": 0, "backbone_lr": 1.0, "layer_decay": 1.0, "batchnorm": "train", "head_init": "zero"}
BN_FROZEN = {**AS_LOADED, "batchnorm": "frozen"}
LPFT = {**BN_FROZEN, "head_init": "probe"}
SETTINGS = {
    "timm-head": AS_LOADED,
    "as-is": AS_LOADED,
    "freeze1": {**AS_LOADED, "freeze_epochs": 1},
    "blr0.1": {**AS_LOADED, "backbone_lr": 0.1},
    "freeze1-blr0.1": {**AS_LOADED, "freeze_epochs": 1, "backbone_lr": 0.1},
    "freeze1-ld0.85": {**AS_LOADED, "freeze_epochs": 1, "layer_decay": 0.85},
    "freeze1-blr0.1-warm0": {**AS_LOADED, "freeze_epochs": 1, "backbone_lr": 0.1, "warmup_epochs": 0},
    # round 2: the rate itself (lr_scale multiplies the recipe's lr), milder backbone shares, decay alone
    "lr0.3x": {**AS_LOADED, "lr_scale": 0.3},
    "lr3x": {**AS_LOADED, "lr_scale": 3.0},
    "blr0.3": {**AS_LOADED, "backbone_lr": 0.3},
    "lr3x-blr0.3": {**AS_LOADED, "lr_scale": 3.0, "backbone_lr": 0.3},
    "ld0.85": {**AS_LOADED, "layer_decay": 0.85},
    "freeze1-warm0": {**AS_LOADED, "freeze_epochs": 1, "warmup_epochs": 0},
    # round 3 (issue 43): BatchNorm's statistics kept as loaded, the head started from the probe
    # (LP-FT), the head-only epochs through the clean unfreeze, and the rate under each
    "bn-frozen": BN_FROZEN,
    "lpft": LPFT,
    "lpft-lr0.3x": {**LPFT, "lr_scale": 0.3},
    "bn-frozen-freeze2": {**BN_FROZEN, "freeze_epochs": 2},
    "lpft-bn-train": {**AS_LOADED, "head_init": "probe"},
    "bn-frozen-lr0.3x": {**BN_FROZEN, "lr_scale": 0.3},
    "lpft-lr0.1x": {**LPFT, "lr_scale": 0.1},
    "freeze2": {**AS_LOADED, "freeze_epochs": 2},
    # what made the loss jump at the unfreeze, one cause at a time (the library before issue 43 put
    # BatchNorm in eval mode while the backbone was frozen and gave the backbone the schedule's
    # full rate at once): `before` is that library; `ramp-only` keeps its mode switch but warms the
    # backbone up; `bn-only` keeps BatchNorm's statistics throughout without the warm-up
    "freeze2-before": {**AS_LOADED, "freeze_epochs": 2},
    "freeze2-ramp-only": {**AS_LOADED, "freeze_epochs": 2},
    "freeze2-bn-only": {**BN_FROZEN, "freeze_epochs": 2},
}
ROUND_1 = list(SETTINGS)[:7]
ROUND_3 = ["as-is", "bn-frozen", "lpft", "lpft-lr0.3x", "bn-frozen-freeze2", "lpft-bn-train", "bn-frozen-lr0.3x",
           "lpft-lr0.1x", "freeze2"]
UNFREEZE = ["freeze2-before", "freeze2-ramp-only", "freeze2-bn-only"]
ROUNDS = {"1": ROUND_1, "3": ROUND_3, "unfreeze": UNFREEZE}


def _mode_switching(model, epoch, config, lower):
    """`fit`'s training mode as it was before issue 43: BatchNorm in eval mode while the backbone
    is frozen, training from the unfreeze."""
    from hierclf.models.factory import hold_batchnorm, set_backbone_frozen

    model.train()
    frozen = epoch < config.freeze_epochs
    set_backbone_frozen(model, frozen)
    if frozen:
        hold_batchnorm(model)
    return frozen


NO_RAMP = mock.patch("hierclf.train.optim.UnfreezeWarmup", lambda schedule, *rest: schedule)
PATCHES = {"timm-head": [mock.patch("hierclf.models.factory.zero_head", lambda classifier: None)],
           "freeze2-before": [mock.patch("hierclf.train.loop._train_mode", _mode_switching), NO_RAMP],
           "freeze2-ramp-only": [mock.patch("hierclf.train.loop._train_mode", _mode_switching)],
           "freeze2-bn-only": [NO_RAMP]}
"""What a setting changes in the library itself: timm's own head, the unfreeze as it was."""


def run_grid(recipe: Path, out: Path, overrides: list[str], names: list[str], fold: int | None = 0) -> None:
    """Each setting on the recipe as committed (its loader workers too: augmentation draws per
    worker, so another count trains another model), the probe with workers 0 (it draws nothing)."""
    if not (out / "probe" / "coarse" / "oof.npz").exists():
        linear_probe(recipe, out / "probe", overrides=[*overrides, "coarse.workers=0"])
    base_lr = recipe_of(recipe, overrides).coarse.lr
    for name in names:
        setting = dict(SETTINGS[name])
        if "lr_scale" in setting:
            setting["lr"] = base_lr * setting.pop("lr_scale")
        loaded = recipe_of(recipe, [*overrides, *(f"coarse.{key}={value}" for key, value in setting.items())])
        started = time.perf_counter()
        with contextlib.ExitStack() as patched:
            for patch in PATCHES.get(name, []):
                patched.enter_context(patch)
            fit_coarse(loaded, out / name, only_fold=fold)
        logging.info("%s: %.0f s", name, time.perf_counter() - started)


def grid_rows(out: Path) -> list[dict]:
    """Each finished setting's fold-0 figures beside the probe's: the best and last epoch, the
    first epoch's training loss, the unfreeze (the first unfrozen epoch's training loss over the
    last head-only one's), the kept epoch (0: the start, LP-FT's probe) and the seconds."""
    probe = json.loads((out / "probe" / "coarse" / "fold-0" / "result.json").read_text())
    classes = len(json.loads((out / "probe" / "coarse" / "summary.json").read_text())["classes"])
    rows = [{"set": out.name, "setting": "linear probe", "best": probe["val_macro_f1"], "last": probe["val_macro_f1"],
             "first_loss": None, "chance": math.log(classes), "seconds": None}]
    for name in SETTINGS:
        folder = out / name / "coarse" / "fold-0"
        if not (folder / "result.json").exists():
            continue
        history, result = read_history(folder), json.loads((folder / "result.json").read_text())
        frozen = SETTINGS[name].get("freeze_epochs", 0)
        start = result.get("start") or {}
        rows.append({"set": out.name, "setting": name, "best": result["val_macro_f1"],
                     "last": history[-1]["val_macro_f1"], "first_loss": history[0]["train_loss"],
                     "chance": math.log(classes), "epochs": len(history), "kept": result["best_epoch"],
                     "unfreeze": history[frozen]["train_loss"] / history[frozen - 1]["train_loss"] if frozen else None,
                     "seconds": sum(line["seconds"] for line in history) + start.get("seconds", 0.0)})
    return rows


def report(outs: list[Path]) -> None:
    print("| set | setting | fold-0 val macro-F1, kept epoch | last epoch | − probe | kept epoch "
          "| first epoch's train_loss / ln C | unfreeze: loss after / before | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for out in outs:
        rows = grid_rows(out)
        probe = rows[0]["best"]
        for row in rows:
            loss = f"{row['first_loss']:.3f} / {row['chance']:.3f}" if row["first_loss"] is not None else ""
            seconds = f"{row['seconds']:.0f}" if row["seconds"] is not None else ""
            unfreeze = f"{row['unfreeze']:.2f}" if row.get("unfreeze") is not None else ""
            kept = "0 (start)" if row.get("kept") == 0 else str(row.get("kept", ""))
            print(f"| {row['set']} | {row['setting']} | {row['best']:.4f} | {row['last']:.4f} | "
                  f"{(row['best'] - probe) * 100:+.2f} | {kept} | {loss} | {unfreeze} | {seconds} |")
    summary = Path(outs[0]).parent / "grid.json"
    summary.write_text(json.dumps([row for out in outs for row in grid_rows(out)], indent=1))


def main() -> None:
    parser = benchmark_parser(__doc__, recipe=True, out=True)
    parser.add_argument("--setting", action="append", choices=list(SETTINGS), help="default: the round's")
    parser.add_argument("--round", choices=list(ROUNDS), default="3", help="the settings of a round (default 3)")
    parser.add_argument("--all-folds", action="store_true", help="train every fold, not only fold 0 (a whole run "
                                                                  "of a setting, to score it as finetune_goal.py does)")
    parser.add_argument("--report", type=Path, nargs="+", metavar="OUT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.report:
        report(args.report)
    else:
        run_grid(args.recipe, args.out, args.overrides, args.setting or ROUNDS[args.round],
                 None if args.all_folds else 0)


if __name__ == "__main__":
    main()
