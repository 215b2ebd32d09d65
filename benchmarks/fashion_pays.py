"""Does the hierarchy pay for itself? Fashion-MNIST (all 60,000 training images, or a stratified
`--train-limit` subset), 3 folds, scored out-of-fold and on the official 10,000 test images.

Four runs share the rows and the folds:

- `flat`: the flat model (test_resnet from scratch, 32 px, `--epochs`; or the [coarse] table of
  `--recipe`, as recipes/fashion-mnist-lite0.toml's pretrained EfficientNet-Lite0);
- `control`: the same recipe given the hierarchy's extra budget as more epochs
  (`--control-epochs`, default 1.5 × `--epochs`): the budget-matched flat control;
- `seed1`: the flat recipe again with another seed, so `evaluate --control` can score a
  two-model seed ensemble out-of-fold (twice the flat budget);
- `hierarchical`: the flat run as the coarse stage (no coarse training), and a specialist for
  tops {T-shirt/top, Pullover, Coat, Shirt} started from the flat model of its own fold, at
  `--fine-img-size` (40 px), for `--fine-epochs` (5) at `--fine-lr` (2e-3), flipped
  horizontally half the time.

`report` scores every pipeline out-of-fold with its cost and on the official 10,000 test images,
and splits each one's out-of-fold errors into choosing the group and choosing within it. Each
step trains only what its run folder does not hold yet, so steps can run one at a time (each
process on one core: OMP_NUM_THREADS=1 taskset -c N, so two steps can share the 2 cores):

    python benchmarks/fashion_pays.py --step flat --step control --step seed1
    python benchmarks/fashion_pays.py --step hierarchical --step report

Every difference to the chosen hierarchy pipeline comes with a 95 % paired-bootstrap interval,
out-of-fold (from `evaluate`) and on the test set.

`--fold 0 --hier-out NAME` trains one fold's specialist only, to compare settings cheaply;
`--hier-out NAME --step report` scores that hierarchy (results-NAME.json). `report` leaves out a
control whose run has not finished (and says so), and scores beside the others any flat run
named by `--also` (a control of another budget, trained with hierclf fit-coarse).
"""
from __future__ import annotations

import argparse
import json
import tomllib
import logging
from pathlib import Path

import numpy as np

from harness import benchmark_parser
from hierclf import (evaluate_run, FASHION_MNIST_CLASSES, fit_coarse, fit_fine, Inference, load_input_items,
                    load_training_items, paired_difference, predict_items, recipe_from_dict, Run, score_run,
                    scores, write_fashion_mnist)

TOPS = ["T-shirt/top", "Pullover", "Coat", "Shirt"]
SHOES = ["Sandal", "Sneaker", "Ankle boot"]
HFLIP = [{"name": "HorizontalFlip", "p": 0.5}]
STEPS = ("flat", "control", "seed1", "hierarchical", "report")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench-pays"))
    parser.add_argument("--step", action="append", choices=STEPS, help="what to do (repeatable; default: all)")
    parser.add_argument("--train-limit", type=int, default=0, help="a stratified subset of the training rows (0: all)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6, help="the flat model's epochs")
    parser.add_argument("--control-epochs", type=int, default=9, help="the budget-matched control's epochs")
    parser.add_argument("--recipe", type=Path, default=None,
                        help="take the flat model's [coarse] table from this recipe (its epochs from --epochs)")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--fine-img-size", type=int, default=40)
    parser.add_argument("--fine-epochs", type=int, default=5)
    parser.add_argument("--fine-lr", type=float, default=2e-3)
    parser.add_argument("--fine-augment", default="hflip", help="a preset, or hflip: a horizontal flip half the time")
    parser.add_argument("--fine-key", action="append", default=[], metavar="KEY=VALUE",
                        help="another [fine.tops] key, as label_smoothing=0.1 (repeatable; to explore)")
    parser.add_argument("--hier-out", default="hierarchical", help="the hierarchical run's folder under --out")
    parser.add_argument("--also", action="append", default=[], metavar="NAME",
                        help="another finished flat run under --out (as a control trained with hierclf "
                             "fit-coarse --set coarse.epochs=11), scored beside the others by report")
    parser.add_argument("--fold", type=int, default=None, help="train the specialist on this fold only (to explore)")
    parser.add_argument("--relative-to", default=None, metavar="COMBINER",
                        help="report: the hierarchy's pipeline each row's interval is measured from (default: the "
                             "run's chosen combiner)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    steps = args.step or list(STEPS)

    write_fashion_mnist(args.data, train_limit=args.train_limit)
    stage = flat_stage(args)
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
                              "warmup_epochs": 0,
                              "augment": HFLIP if args.fine_augment == "hflip" else args.fine_augment,
                              "init_from_coarse": True, **dict(_key_value(text) for text in args.fine_key)}}})
        fit_coarse(recipe, args.out / args.hier_out, items=items)
        fit_fine(args.out / args.hier_out, items=items, only_fold=args.fold)
    if "report" in steps:
        report(args, flat_runs)


def flat_stage(args: argparse.Namespace) -> dict:
    """The flat model's [coarse] keys: --recipe's table (its paths resolved against the recipe's
    folder) or test_resnet from scratch; one process, no loader workers, decoded images cached."""
    if args.recipe is None:
        stage = {"model": args.model, "img_size": args.img_size, "in_chans": 1, "batch_size": 128, "lr": 3e-3,
                 "weight_decay": 5e-4, "scheduler": "cosine", "warmup_epochs": 1, "augment": "none"}
    else:
        stage = tomllib.loads(args.recipe.read_text())["coarse"]
        if "weights" in stage:
            stage["weights"] = str((args.recipe.parent / stage["weights"]).resolve())
    return {**stage, "workers": 0, "cache_mb": 1024}


def report(args: argparse.Namespace, flat_runs: dict) -> None:
    """Every pipeline out-of-fold (with its cost) and on the official 10,000 test images, and where
    each one's errors are: choosing the group (routing) or choosing within tops. Each run's test
    probabilities are computed once: the ensemble averages its members' (as `predict_runs`
    does), and every combiner combines the same stage outputs (as `predict_items` does)."""
    out = args.out
    hier = Run.open(out / args.hier_out)
    # a control whose run has not finished every fold yet is left out, and said so
    flat_runs = {name: keys for name, keys in flat_runs.items()
                 if name == "flat" or _finished(out / name)} | {name: {} for name in args.also}
    pipelines = [("flat", ["flat"]), (f"control ({args.control_epochs} epochs)", ["control"]),
                 ("flat + seed1", ["flat", "seed1"]), *((name, [name]) for name in args.also)]
    flat_pipelines = {name: members for name, members in pipelines if set(members) <= set(flat_runs)}
    print("controls left out (unfinished):", sorted({"control", "seed1"} - set(flat_runs)) or "none")
    controls = [[out / member for member in members] for name, members in flat_pipelines.items() if name != "flat"]
    evaluated = evaluate_run(hier.root, against=out / "flat", controls=controls).to_dict()
    test = load_input_items(args.data / "test.csv", FASHION_MNIST_CLASSES)
    scored = score_run(hier)
    test_probs = {name: predict_items(out / name, test, inference=Inference(workers=0)).probs for name in flat_runs}
    oof_probs = {name: np.load(Run.open(out / name).oof_path("coarse"))["probs"] for name in flat_runs}
    rows, predicted = {}, {}
    for (name, members), result in zip(flat_pipelines.items(), [evaluated["flat"], *evaluated["controls"]]):
        predicted[name] = (np.mean([oof_probs[m] for m in members], axis=0).argmax(1),
                           np.mean([test_probs[m] for m in members], axis=0).argmax(1))
        rows[name] = _row(result, scored.labels, test.labels, *predicted[name])
    for combiner, result in evaluated["pipelines"].items():  # the coarse stage is the flat run's folds
        test_labels = predict_items(hier, test, combiner=combiner, inference=Inference(workers=0)).labels
        oof_labels = scored.outcomes[combiner].labels
        predicted[f"hierarchy, {combiner}"] = oof_labels, test_labels
        rows[f"hierarchy, {combiner}"] = _row(result, scored.labels, test.labels, oof_labels, test_labels)
    relative = args.relative_to or evaluated["chosen"]
    _intervals(rows, predicted, f"hierarchy, {relative}", scored.labels, test.labels)
    flat = evaluated["flat"]["training"]
    results = "results.json" if args.hier_out == "hierarchical" else f"results-{args.hier_out}.json"
    (out / results).write_text(json.dumps({"rows": rows, "verdict": evaluated["verdict"], "flat_training": flat,
                                           "intervals_from": f"hierarchy, {relative}"}, indent=2) + "\n")
    _print(rows, flat, evaluated, relative)


def _finished(root: Path) -> bool:
    return (root / "hierarchy.json").is_file() and Run.open(root).oof_path("coarse").is_file()


def _print(rows: dict, flat: dict, evaluated: dict, relative: str) -> None:
    print(f"\n{'pipeline':<22} {'OOF F1':>7} {'test F1':>7} {'test-OOF':>8} {'images':>6} {'MPix':>5} {'seconds':>7} "
          f"{'passes':>6} {'group acc':>9} {'in tops':>7} {'in shoes':>8}")
    for name, row in rows.items():
        print(f"{name:<22} {row['oof']:>7.4f} {row['test']:>7.4f} {row['test'] - row['oof']:>+8.4f} "
              f"{row['images'] / flat['images']:>5.2f}x {row['megapixels'] / flat['megapixels']:>4.2f}x "
              f"{row['seconds'] / flat['seconds']:>6.2f}x {row['passes']:>6.1f} {row['group_accuracy']:>9.4f} "
              f"{row['within']['tops']:>7.4f} {row['within']['shoes']:>8.4f}")
    print(f"\nhierarchy, {relative} minus each, points, 95% paired-bootstrap interval:")
    for name, row in rows.items():
        print(f"{name:<22} OOF {_interval(row['chosen_minus']['oof'])}   test {_interval(row['chosen_minus']['test'])}")
    for line in evaluated["verdict"]:
        print(line)


def _row(result: dict, labels: np.ndarray, test_targets: np.ndarray, oof_labels: np.ndarray,
          test_labels: np.ndarray) -> dict:
    """Scores, cost, and the out-of-fold split of errors: the right group (tops, shoes and each
    other class), and within tops and within shoes given the right group."""
    group_of = {name: index for index, name in enumerate(FASHION_MNIST_CLASSES)}
    coarse = np.arange(10)
    for members in (TOPS, SHOES):
        coarse[[group_of[m] for m in members]] = group_of[members[0]]
    right_group = coarse[oof_labels] == coarse[labels]
    within = {}
    for name, members in (("tops", TOPS), ("shoes", SHOES)):
        mine = np.isin(labels, [group_of[m] for m in members]) & right_group
        within[name] = float((oof_labels[mine] == labels[mine]).mean())
    test = scores(test_targets, test_labels, len(FASHION_MNIST_CLASSES))["macro_f1"]
    return {"oof": result["macro_f1"], "test": test, **result["training"],
            "passes": result["inference"]["passes"], "group_accuracy": float(right_group.mean()), "within": within}


def _intervals(rows: dict, predicted: dict, chosen: str, oof_targets: np.ndarray, test_targets: np.ndarray) -> None:
    """Each row's `chosen_minus`: `chosen`'s macro-F1 (a hierarchy pipeline) minus the row's, out-of-fold and
    on the test set, each with its paired-bootstrap interval."""
    for name, (oof_labels, test_labels) in predicted.items():
        rows[name]["chosen_minus"] = {
            "oof": paired_difference(oof_targets, predicted[chosen][0], oof_labels, len(FASHION_MNIST_CLASSES)),
            "test": paired_difference(test_targets, predicted[chosen][1], test_labels, len(FASHION_MNIST_CLASSES))}


def _interval(difference: dict) -> str:
    return (f"{difference['difference'] * 100:+.2f} "
            f"[{difference['low'] * 100:+.2f}, {difference['high'] * 100:+.2f}]")


def _key_value(text: str) -> tuple[str, object]:
    key, value = text.split("=", 1)
    return key, json.loads(value)


if __name__ == "__main__":
    main()
