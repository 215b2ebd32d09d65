"""Prediction speed: a hierarchical run against the flat one with the same backbone, side by side.

A flat run and a hierarchical run (one group of confusable classes, one specialist of the same
backbone and size) are trained briefly on Fashion-MNIST. Timing does not depend on accuracy.
Both then label the official test images from PNG files. The hierarchical run does so with the
routed combiner (each specialist only on the images routed to it) and with the product (every
specialist on every image). The runs alternate, several rounds each, and the ratios of their
best times are printed.

    python benchmarks/speed_predict.py
    python benchmarks/speed_predict.py --group T-shirt/top,Pullover,Coat,Shirt   # a group of 40% of the images
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from harness import benchmark_parser
from hierclf import (FASHION_MNIST_CLASSES, fit_coarse, fit_fine, Inference, load_input_items, predict_items,
                    recipe_from_dict, write_fashion_mnist)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-speed-predict"))
    parser.add_argument("--group", default="T-shirt/top,Shirt", help="the confusable classes, comma-separated")
    parser.add_argument("--train-limit", type=int, default=2000)
    parser.add_argument("--test-limit", type=int, default=5000)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    data = write_fashion_mnist(args.out / "data", train_limit=args.train_limit, test_limit=args.test_limit)
    group = [name.strip() for name in args.group.split(",")]
    stage = {"model": args.model, "img_size": args.img_size, "in_chans": 1, "epochs": 2, "batch_size": 64,
             "lr": 3e-3, "workers": args.workers}
    base = {"data": {"csv": str(data / "train.csv"), "class_names": list(FASHION_MNIST_CLASSES)},
            "folds": {"count": args.folds}, "coarse": stage}
    runs = {"flat": args.out / "flat", "hierarchical": args.out / "hierarchical"}
    if not (runs["hierarchical"] / "combiner.json").is_file():  # the last file the two runs write
        fit_coarse(recipe_from_dict(base), runs["flat"])
        fit_coarse(recipe_from_dict({**base, "hierarchy": {"groups": [group], "group_names": ["group"]}}),
                   runs["hierarchical"])
        fit_fine(runs["hierarchical"])
    items = load_input_items(data / "test.csv", FASHION_MNIST_CLASSES)
    timed = {"flat": (runs["flat"], "product"), "routed": (runs["hierarchical"], "routed"),
             "product": (runs["hierarchical"], "product")}
    seconds = {name: [] for name in timed}
    routed_rows = 0
    for _ in range(args.rounds):
        for name, (run, combiner) in timed.items():
            started = time.perf_counter()
            predictions = predict_items(run, items, combiner=combiner,
                                        inference=Inference(batch_size=args.batch_size, workers=args.workers))
            seconds[name].append(time.perf_counter() - started)
            if name == "routed":
                routed_rows = predictions.specialist_rows["group"]
    best = {name: min(values) for name, values in seconds.items()}
    ratios = {"routed / flat": best["routed"] / best["flat"], "product / routed": best["product"] / best["routed"],
              "product / flat": best["product"] / best["flat"]}
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                        "seconds": seconds, "ratios": ratios,
                                                        "routed_rows": routed_rows}, indent=2) + "\n")
    print(f"predict {len(items)} PNG files, {args.model} at {args.img_size} px, {args.folds} fold models per stage, "
          f"batch {args.batch_size}, {args.workers} workers; group {group} gets {routed_rows} images "
          f"({routed_rows / len(items):.0%}) routed")
    for name, value in best.items():
        print(f"  {name:<8} {value:6.2f} s  ({len(items) / value:6.0f} images/s)")
    for name, value in ratios.items():
        print(f"  {name:<17} {value:.3f}")


if __name__ == "__main__":
    main()
