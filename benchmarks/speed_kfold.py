"""K-fold cost: k folds should cost k times one fold, no more (no work repeated across folds).

The same recipe is trained twice from PNG files: once one fold only (`--fold 0`), once every
fold. Every fold trains on the same number of rows, so the ratio all / (k × one) is the
overhead per fold that K-fold adds (≤ 1 when setup is shared by the folds). With `cache_mb`,
decoding happens once for all folds; the cached pair is timed too.

    python benchmarks/speed_kfold.py
    python benchmarks/speed_kfold.py --folds 5 --model resnet18
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from harness import benchmark_parser
from hierclf import FASHION_MNIST_CLASSES, fit_coarse, recipe_from_dict, write_fashion_mnist


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-speed-kfold"))
    parser.add_argument("--train-limit", type=int, default=3000)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data = write_fashion_mnist(args.out / "data", train_limit=args.train_limit, test_limit=100)
    results = {}
    for cache_mb in (0, 1024):
        recipe = recipe_from_dict({
            "data": {"csv": str(data / "train.csv"), "class_names": list(FASHION_MNIST_CLASSES)},
            "folds": {"count": args.folds},
            "coarse": {"model": args.model, "img_size": args.img_size, "in_chans": 1, "epochs": args.epochs,
                       "batch_size": 64, "workers": args.workers, "cache_mb": cache_mb}})
        seconds = {}
        for label, fold in (("one fold", 0), ("all folds", None)):
            out = args.out / f"run-{label.replace(' ', '-')}-cache{cache_mb}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            fit_coarse(recipe, out, only_fold=fold)
            seconds[label] = time.perf_counter() - started
        ratio = seconds["all folds"] / (args.folds * seconds["one fold"])
        results[f"cache_mb={cache_mb}"] = {**seconds, "ratio": ratio}
        print(f"cache_mb {cache_mb:>4}: one fold {seconds['one fold']:6.1f} s, {args.folds} folds "
              f"{seconds['all folds']:6.1f} s: all / ({args.folds} × one) = {ratio:.3f}", flush=True)
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                        "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
