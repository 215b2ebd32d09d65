"""The training toolkit on real images: one recipe key changed at a time against a baseline.

Fashion-MNIST, flat 10 classes, the same rows, folds, backbone and epochs for every run. Each
run is scored out-of-fold and on the official test set; the training score of the kept models
gives the bias/variance line. Test-time augmentation and a three-seed ensemble are scored on
the test set from the baseline's recipe.

    python benchmarks/fashion_toolkit.py --train-limit 3000 --test-limit 5000 --folds 3 --epochs 6
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from hierclf import (FASHION_MNIST_CLASSES, fit_coarse, Inference, Items, predict_items, predict_runs,
                    read_fashion_mnist, recipe_from_dict, scores)

from harness import fashion_parser, fashion_stage

VARIANTS = {
    "baseline": {},
    "label_smoothing 0.1": {"label_smoothing": 0.1},
    "mixup 0.2": {"mixup_alpha": 0.2},
    "cutmix 1.0": {"cutmix_alpha": 1.0},
    "ema 0.99": {"ema": True, "ema_decay": 0.99},
    "augment light": {"augment": "light"},
    "augment heavy": {"augment": "heavy"},
    "focal 2": {"loss": "focal", "focal_gamma": 2.0},
}


def split(name: str, limit: int) -> Items:
    images, labels, rows = read_fashion_mnist(name, limit=limit)
    return Items.from_arrays(images, labels, FASHION_MNIST_CLASSES, ids=[f"{name}-{row}" for row in rows])


def main() -> None:
    parser = fashion_parser(__doc__, "runs/bench-toolkit", train_limit=3000, epochs=6)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    train, test = split("train", args.train_limit), split("test", args.test_limit)
    stage = fashion_stage(args)
    results = {}

    def run(name: str, keys: dict, seed: int = 0) -> Path:
        recipe = recipe_from_dict({"folds": {"count": args.folds, "seed": 0},
                                   "coarse": {**stage, **keys}}).with_seed(seed)
        out = args.out / name.replace(" ", "-")
        started = time.perf_counter()
        summary = fit_coarse(recipe, out, items=train)
        seconds = time.perf_counter() - started
        predictions = predict_items(out, test, inference=Inference(workers=args.workers))
        results[name] = {"oof": summary["oof_macro_f1"], "train": summary["train_macro_f1"],
                         "test": scores(predictions.targets, predictions.labels, 10)["macro_f1"], "seconds": seconds}
        return out

    for name, keys in VARIANTS.items():
        run(name, keys)
    started = time.perf_counter()
    tta = predict_items(args.out / "baseline", test, inference=Inference(workers=args.workers, tta=("hflip",)))
    results["baseline + TTA hflip"] = {"test": scores(tta.targets, tta.labels, 10)["macro_f1"],
                                       "seconds": time.perf_counter() - started}
    seeds = [args.out / "baseline"] + [run(f"baseline seed {seed}", {}, seed) for seed in (1, 2)]
    vote = predict_runs(seeds, test, inference=Inference(workers=args.workers))
    results["3-seed ensemble"] = {"test": scores(vote.targets, vote.labels, 10)["macro_f1"],
                                  "seconds": sum(results[n]["seconds"] for n in ("baseline", "baseline seed 1",
                                                                                "baseline seed 2"))}
    (args.out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                        "results": results}, indent=2) + "\n")
    print(f"\nFashion-MNIST, 10 classes: {len(train)} training rows, {len(test)} test rows, {args.folds} folds, "
          f"{args.model} at {args.img_size} px, {args.epochs} epochs")
    print(f"{'run':<22} {'train F1':>8} {'OOF F1':>7} {'test F1':>7} {'seconds':>7}")
    for name, result in results.items():
        train_f1 = f"{result['train']:.4f}" if "train" in result else "–"
        oof_f1 = f"{result['oof']:.4f}" if "oof" in result else "–"
        print(f"{name:<22} {train_f1:>8} {oof_f1:>7} {result['test']:>7.4f} {result['seconds']:>7.0f}")


if __name__ == "__main__":
    main()
