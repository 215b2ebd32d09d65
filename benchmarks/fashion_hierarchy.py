"""Flat vs hierarchical on Fashion-MNIST, same backbone, same training budget in images seen.

Both runs share the data and the folds. The hierarchical run merges the natural groups, tops
{T-shirt/top, Pullover, Coat, Shirt} and shoes {Sandal, Sneaker, Ankle boot}: its coarse model
gets `--coarse-share` of the flat run's budget and the two specialists split the rest equally in
images. Each pipeline is scored out-of-fold and on the official 10,000-image test set.

    python benchmarks/fashion_hierarchy.py --train-limit 20000 --folds 3 --epochs 8
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from harness import benchmark_parser
from hierclf import (evaluate_run, FASHION_MNIST_CLASSES, fit_coarse, fit_fine, Inference, load_input_items,
                    load_training_items, predict_items, recipe_from_dict, scores, write_fashion_mnist)

TOPS = ["T-shirt/top", "Pullover", "Coat", "Shirt"]
SHOES = ["Sandal", "Sneaker", "Ankle boot"]


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-fashion"))
    parser.add_argument("--train-limit", type=int, default=20000, help="stratified training subset (0: all 60,000)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8, help="the flat model's epochs: the budget both get")
    parser.add_argument("--coarse-share", type=float, default=0.5, help="share of the budget the coarse model gets")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--fine-img-size", type=int, default=0, help="specialists' input size (0: same as --img-size)")
    parser.add_argument("--init-from-coarse", action="store_true",
                        help="start each specialist from the coarse model of its fold")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = args.data if args.train_limit == 0 else args.data.with_name(f"{args.data.name}-{args.train_limit}")
    write_fashion_mnist(data, train_limit=args.train_limit)
    stage = {"model": args.model, "img_size": args.img_size, "in_chans": 1, "batch_size": 128, "lr": 3e-3,
             "weight_decay": 5e-4, "scheduler": "cosine", "warmup_epochs": 1, "augment": "none",
             "workers": args.workers}
    base = {"data": {"csv": str(data / "train.csv"), "class_names": list(FASHION_MNIST_CLASSES)},
            "folds": {"count": args.folds, "seed": 0}}
    items = load_training_items(recipe_from_dict(base).data)
    rows = {name: int(sum(items.class_names[label] in members for label in items.labels))
            for name, members in (("tops", TOPS), ("shoes", SHOES))}
    coarse_epochs = max(1, round(args.epochs * args.coarse_share))
    left = (args.epochs - coarse_epochs) * len(items)  # images left for the specialists, per fold share
    fine_epochs = {name: max(1, round(left / 2 / count)) for name, count in rows.items()}
    budget = {"flat": args.epochs * len(items),
              "hierarchical": coarse_epochs * len(items) + sum(fine_epochs[n] * rows[n] for n in rows)}

    flat = recipe_from_dict({**base, "coarse": {**stage, "epochs": args.epochs}})
    fine = {name: {"epochs": epochs, "img_size": args.fine_img_size or args.img_size,
                   "init_from_coarse": args.init_from_coarse} for name, epochs in fine_epochs.items()}
    hier = recipe_from_dict({**base, "hierarchy": {"groups": [TOPS, SHOES], "group_names": ["tops", "shoes"]},
                             "coarse": {**stage, "epochs": coarse_epochs}, "fine": fine})
    seconds = {}
    started = time.perf_counter()
    fit_coarse(flat, args.out / "flat", items=items)
    seconds["flat"] = time.perf_counter() - started
    started = time.perf_counter()
    fit_coarse(hier, args.out / "hierarchical", items=items)
    fit_fine(args.out / "hierarchical", items=items)
    seconds["hierarchical"] = time.perf_counter() - started
    report = evaluate_run(args.out / "hierarchical", against=args.out / "flat").to_dict()

    test = load_input_items(data / "test.csv", FASHION_MNIST_CLASSES)
    results = {"flat": {"oof": report["flat"]["macro_f1"],
                        "test": _test_f1(args.out / "flat", test, None, args.workers)}}
    for combiner in ("product", "routed", "stacking"):
        results[combiner] = {"oof": report["pipelines"][combiner]["macro_f1"],
                             "test": _test_f1(args.out / "hierarchical", test, combiner, args.workers)}
    summary = {"train_rows": len(items), "test_rows": len(test), "folds": args.folds, "model": args.model,
               "img_size": args.img_size, "fine_img_size": args.fine_img_size or args.img_size,
               "init_from_coarse": args.init_from_coarse, "coarse_share": args.coarse_share,
               "epochs": {"flat": args.epochs, "coarse": coarse_epochs, **fine_epochs},
               "images_seen": budget, "seconds": seconds, "routing_accuracy": report["routing"]["accuracy"],
               "specialists": {n: s["oof_macro_f1"] for n, s in report["specialists"].items()},
               "macro_f1": results}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nFashion-MNIST, {len(items)} training rows, {args.folds} folds, {args.model} at {args.img_size} px "
          f"(specialists at {summary['fine_img_size']} px{', from the coarse model' if args.init_from_coarse else ''})")
    print(f"images seen: flat {budget['flat']:,}, hierarchical {budget['hierarchical']:,} "
          f"(coarse {coarse_epochs} epochs, tops {fine_epochs['tops']}, shoes {fine_epochs['shoes']})")
    print(f"{'pipeline':<10} {'OOF macro-F1':>13} {'test macro-F1':>14} {'test − OOF':>11}")
    for name, result in results.items():
        print(f"{name:<10} {result['oof']:>13.4f} {result['test']:>14.4f} {result['test'] - result['oof']:>+11.4f}")
    print(f"routing accuracy (OOF) {report['routing']['accuracy']:.4f}; training seconds: flat "
          f"{seconds['flat']:.0f}, hierarchical {seconds['hierarchical']:.0f}")


def _test_f1(run: Path, test, combiner: str | None, workers: int) -> float:
    predictions = predict_items(run, test, combiner=combiner, inference=Inference(workers=workers))
    return scores(predictions.targets, predictions.labels, len(predictions.class_names))["macro_f1"]


if __name__ == "__main__":
    main()
