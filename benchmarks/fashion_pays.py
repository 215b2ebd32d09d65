"""Does the hierarchy pay for itself? Fashion-MNIST, all 60,000 training images, 3 folds.

Four runs share the rows and the folds:

- `flat`: the flat model (test_resnet from scratch, 32 px, `--epochs`);
- `control`: the same recipe given the hierarchy's extra budget as more epochs
  (`--control-epochs`, default 1.5 × `--epochs`): the budget-matched flat control;
- `seed1`: the flat recipe again with another seed, so `evaluate --control` can score a
  two-model seed ensemble out-of-fold (twice the flat budget);
- `hierarchical`: the flat run as the coarse stage (no coarse training), and a specialist for
  tops {T-shirt/top, Pullover, Coat, Shirt} started from the flat model of its own fold, at
  `--fine-img-size`, for `--fine-epochs`.

Each step trains only what its run folder does not hold yet, so steps can run one at a time:

    python benchmarks/fashion_pays.py --step flat --step control --step seed1
    python benchmarks/fashion_pays.py --step hierarchical --step report
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hierclf.data import load_input_items, load_training_items
from hierclf.data.builtin import FASHION_MNIST_CLASSES, write_fashion_mnist
from hierclf.evaluate import evaluate_run
from hierclf.metrics import scores
from hierclf.predict import predict_items, predict_runs
from hierclf.recipe_io import recipe_from_dict
from hierclf.train import fit_coarse, fit_fine

TOPS = ["T-shirt/top", "Pullover", "Coat", "Shirt"]
HFLIP = [{"name": "HorizontalFlip", "p": 0.5}]
STEPS = ("flat", "control", "seed1", "hierarchical", "report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pays"))
    parser.add_argument("--step", action="append", choices=STEPS, help="what to do (repeatable; default: all)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="the flat model's epochs")
    parser.add_argument("--control-epochs", type=int, default=9, help="the budget-matched control's epochs")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--fine-img-size", type=int, default=64)
    parser.add_argument("--fine-epochs", type=int, default=3)
    parser.add_argument("--fine-lr", type=float, default=1e-3)
    parser.add_argument("--fine-augment", default="none", help="a preset, or hflip: a horizontal flip half the time")
    parser.add_argument("--hier-out", default="hierarchical", help="the hierarchical run's folder under --out")
    parser.add_argument("--fold", type=int, default=None, help="train the specialist on this fold only (to explore)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    steps = args.step or list(STEPS)

    write_fashion_mnist(args.data)
    stage = {"model": args.model, "img_size": args.img_size, "in_chans": 1, "batch_size": 128, "lr": 3e-3,
             "weight_decay": 5e-4, "scheduler": "cosine", "warmup_epochs": 1, "augment": "none",
             "workers": 0, "cache_mb": 1024}
    base = {"data": {"csv": str(args.data / "train.csv"), "class_names": list(FASHION_MNIST_CLASSES)},
            "folds": {"count": args.folds, "seed": 0}}
    items = load_training_items(recipe_from_dict(base).data)
    flat_runs = {"flat": {"epochs": args.epochs}, "control": {"epochs": args.control_epochs},
                 "seed1": {"epochs": args.epochs, "seed": 1}}
    for name, keys in flat_runs.items():
        if name in steps:
            fit_coarse(recipe_from_dict({**base, "coarse": {**stage, **keys}}), args.out / name, items=items)
    if "hierarchical" in steps:
        recipe = recipe_from_dict({
            **base, "coarse": {**stage, "epochs": args.epochs},
            "hierarchy": {"groups": [TOPS], "group_names": ["tops"], "coarse_run": str(args.out / "flat")},
            "fine": {"tops": {"img_size": args.fine_img_size, "epochs": args.fine_epochs, "lr": args.fine_lr,
                              "warmup_epochs": 0, "augment": HFLIP if args.fine_augment == "hflip" else args.fine_augment,
                              "init_from_coarse": True}}})
        fit_coarse(recipe, args.out / args.hier_out, items=items)
        fit_fine(args.out / args.hier_out, items=items, only_fold=args.fold)
    if "report" in steps:
        report(args, flat_runs)


def report(args: argparse.Namespace, flat_runs: dict) -> None:
    """Every pipeline out-of-fold (with cost) and on the official 10,000 test images."""
    out = args.out
    evaluated = evaluate_run(out / "hierarchical", against=out / "flat",
                             controls=[[out / "control"], [out / "flat", out / "seed1"]])
    test = load_input_items(args.data / "test.csv", FASHION_MNIST_CLASSES)
    test_f1 = {name: _f1(predict_items(out / name, test)) for name in flat_runs}
    test_f1["flat + seed1"] = _f1(predict_runs([out / "flat", out / "seed1"], test))
    for combiner in evaluated["pipelines"]:
        test_f1[combiner] = _f1(predict_items(out / "hierarchical", test, combiner=combiner))
    (out / "results.json").write_text(json.dumps({"evaluate": evaluated, "test_macro_f1": test_f1}, indent=2) + "\n")
    print(f"\n{'pipeline':<16} {'OOF macro-F1':>13} {'test macro-F1':>14}")
    for name, value in test_f1.items():
        print(f"{name:<16} {'':>13} {value:>14.4f}")


def _f1(predictions) -> float:
    return scores(predictions.targets, predictions.labels, len(predictions.class_names))["macro_f1"]


if __name__ == "__main__":
    main()
