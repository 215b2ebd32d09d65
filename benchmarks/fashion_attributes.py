"""Factorised labels on real images: flat vs one head per attribute vs one model per attribute.

Each Fashion-MNIST image is shown in one of three orientations (upright, turned 90°, upside
down), drawn at random per image, so every image has two attributes, garment (10) and
orientation (3): 30 joint classes, label = garment·3 + orientation. The same rows, folds,
backbone and epochs for the three runs:

- flat: one softmax over the 30 joint classes;
- heads: one backbone, a head per attribute, joint = product of the heads;
- separate: one model per attribute (twice the compute);

and the flat model's budget-matched controls for `separate`: the flat recipe with twice the
epochs (`flat-2x-epochs`), and with a second seed (`flat-seed1`), the two flat runs scored as one
ensemble (`flat + seed1`, out-of-fold and on the test set).

Each is scored out-of-fold (joint macro-F1, and each attribute) and on the official test set,
oriented the same way. `--turn-shares 0.714,0.143,0.143` skews the orientations as the mask
competition skews its mask attribute (5 of 7 photos "wear"), so the joint classes are imbalanced
while each attribute alone is less so: the case the users' per-attribute models were for.

    python benchmarks/fashion_attributes.py --train-limit 6000 --test-limit 5000 --folds 3 --epochs 6
    python benchmarks/fashion_attributes.py --train-limit 3000 --turn-shares 0.714,0.143,0.143 --out runs/bench-attributes-skewed
"""
from __future__ import annotations

import json
import logging
import time

import numpy as np

from hierclf import (evaluate_run, FactorHierarchy, FASHION_MNIST_CLASSES, fit_coarse, Inference, Items,
                    predict_runs, read_fashion_mnist, recipe_from_dict, Run, scores, training_cost)

from harness import fashion_parser, fashion_stage

ORIENTATIONS = ("upright", "turned", "upside_down")


def oriented(split: str, limit: int, factors: FactorHierarchy, seed: int, shares: list[float]) -> Items:
    """The split's images, each turned by a random multiple of 90° (0, 1 or 2, drawn with
    `shares`), labelled jointly."""
    images, garments, rows = read_fashion_mnist(split, limit=limit)
    turns = np.random.default_rng(seed).choice(3, size=len(images), p=np.asarray(shares) / sum(shares))
    turned = np.stack([np.rot90(image, k) for image, k in zip(images, turns)])
    labels = factors.encode(np.stack([garments, turns], axis=1))
    return Items.from_arrays(turned, labels, factors.class_names, ids=[f"{split}-{row}" for row in rows])


def head_scores(factors: FactorHierarchy, targets: np.ndarray, predicted: np.ndarray) -> dict:
    """Each attribute's scores, read off joint labels."""
    return factors.coarse_layout.label_scores(factors.decode(targets), factors.decode(predicted))["heads"]


def flat_oof(paths) -> tuple[np.ndarray, np.ndarray]:
    """Targets and out-of-fold labels of one flat run, or of several on the same folds averaged."""
    files = [np.load(Run.open(path).oof_path("coarse")) for path in paths]
    return files[0]["targets"], np.mean([f["probs"] for f in files], axis=0).argmax(1)


def main() -> None:
    parser = fashion_parser(__doc__, "runs/bench-attributes", train_limit=6000, epochs=6)
    parser.add_argument("--turn-shares", default="1,1,1", help="relative frequency of upright, turned, upside down")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    heads = {"garment": [name.replace("/", "-") for name in FASHION_MNIST_CLASSES], "orientation": list(ORIENTATIONS)}
    factors = FactorHierarchy.from_config(heads)
    shares = [float(share) for share in args.turn_shares.split(",")]
    train = oriented("train", args.train_limit, factors, seed=1, shares=shares)
    test = oriented("test", args.test_limit, factors, seed=2, shares=shares)
    stage = fashion_stage(args)
    base = {"folds": {"count": args.folds, "seed": 0}, "coarse": stage}
    recipes = {"flat": recipe_from_dict(base),
               "heads": recipe_from_dict({**base, "hierarchy": {"heads": heads}}),
               "separate": recipe_from_dict({**base, "hierarchy": {"heads": heads, "separate": True}}),
               "flat-2x-epochs": recipe_from_dict({**base, "coarse": {**stage, "epochs": 2 * args.epochs}}),
               "flat-seed1": recipe_from_dict({**base, "coarse": {**stage, "seed": 1}})}
    results = {}
    for name, recipe in recipes.items():
        started = time.perf_counter()
        fit_coarse(recipe, args.out / name, items=train)
        results[name] = {"seconds": time.perf_counter() - started}
    runs = {name: [args.out / name] for name in recipes}
    runs["flat + seed1"] = [args.out / "flat", args.out / "flat-seed1"]
    results["flat + seed1"] = {"seconds": results["flat"]["seconds"] + results["flat-seed1"]["seconds"]}
    flat_images = training_cost(Run.open(args.out / "flat"))["images"]
    for name, paths in runs.items():
        predictions = predict_runs(paths, test, inference=Inference(workers=args.workers))
        if name in ("heads", "separate"):
            report = evaluate_run(args.out / name, against=args.out / "flat",
                                  controls=[[args.out / "flat-2x-epochs"], runs["flat + seed1"]]).to_dict()
            oof_joint = report["pipelines"]["product"]["macro_f1"]
            oof_heads = {head: entry["product"]["macro_f1"] for head, entry in report["heads"].items()}
            results[name]["verdict"] = report["verdict"]
        else:
            targets, predicted = flat_oof(paths)
            oof_joint = scores(targets, predicted, factors.num_classes)["macro_f1"]
            oof_heads = {head: s["macro_f1"] for head, s in head_scores(factors, targets, predicted).items()}
        images = sum(training_cost(Run.open(path))["images"] for path in paths)
        results[name] |= {"oof": oof_joint, "images_vs_flat": images / flat_images, "oof_heads": oof_heads,
                          "test": scores(predictions.targets, predictions.labels, factors.num_classes)["macro_f1"],
                          "test_heads": {head: s["macro_f1"] for head, s in
                                         head_scores(factors, predictions.targets, predictions.labels).items()}}
    (args.out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                        "results": results}, indent=2) + "\n")
    counts = np.bincount(train.labels, minlength=factors.num_classes)
    print(f"\nFashion-MNIST × orientation (30 joint classes, turn shares {args.turn_shares}; joint classes "
          f"{counts.min()}–{counts.max()} rows): {len(train)} training rows, {len(test)} test rows, "
          f"{args.folds} folds, {args.model} at {args.img_size} px, {args.epochs} epochs")
    print(f"{'run':<15} {'images × flat':>13} {'OOF joint F1':>12} {'test joint F1':>13} {'test garment F1':>15} "
          f"{'test orientation F1':>19} {'seconds':>8}")
    for name, result in results.items():
        print(f"{name:<15} {result['images_vs_flat']:>13.2f} {result['oof']:>12.4f} {result['test']:>13.4f} "
              f"{result['test_heads']['garment']:>15.4f} {result['test_heads']['orientation']:>19.4f} "
              f"{result['seconds']:>8.0f}")
    for name in ("heads", "separate"):
        for line in results[name]["verdict"]:
            print(f"{name}: {line}")

if __name__ == "__main__":
    main()
