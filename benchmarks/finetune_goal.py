"""Does fine-tuning with the defaults beat the linear probe? A recipe's flat run (3 folds, the
fine-tuning defaults wherever the recipe sets nothing) against `hierclf probe` of it on the same
folds, out-of-fold and on a held-out test set, each difference with its 95 % paired-bootstrap
interval (docs/benchmarks.md, "Fine-tuning that keeps what the backbone knows").

    python benchmarks/finetune_goal.py recipes/clothing.toml --test data/clothing/test.csv --out runs/goal/clothing
    python benchmarks/finetune_goal.py recipes/faces-utk.toml --test data/utkface/test --out runs/goal/faces
    hierclf fit-coarse recipes/faces-utk.toml --out runs/goal/faces/heads \\
        --set 'hierarchy.heads={gender=["male","female"],age=["<30","30-59",">=60"]}'
    python benchmarks/finetune_goal.py --test data/utkface/test --out runs/goal/faces --step report --also heads
    python benchmarks/finetune_goal.py --out runs/bench-pays-lite0-15k-fix --test data/fashion-mnist-15k/test.csv

Steps (each skipped when its run is finished): `flat` trains OUT/flat from RECIPE (with --set),
`probe` fits OUT/probe over it, `report` scores both and every finished run named by --also
(a folder under OUT on the same folds: a heads run, another recipe's flat run). Each process on
one core (OMP_NUM_THREADS=1 taskset -c N). The flat run trains the recipe as committed (issue
43 on: its loader workers too, since augmentation draws per worker; issue 31's ran with 0).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import numpy as np

from harness import benchmark_parser, markdown_table, recipe_of
from hierclf import (FactorHierarchy, fit_coarse, Inference, linear_probe, load_input_items,
                    load_training_items, paired_difference, predict_items, read_history, Run, score_run,
                    scores, training_cost)


def _finished(root: Path) -> bool:
    return (root / "hierarchy.json").is_file() and Run.open(root).oof_path("coarse").is_file()


def _first_epoch_loss(run: Run) -> float | None:
    """The first epoch's mean training loss over the folds (metrics.jsonl), or None for a probe."""
    if run.is_probe:
        return None
    firsts = [read_history(run.fold_dir("coarse", fold))[0]["train_loss"] for fold in run.finished_folds("coarse")]
    return float(np.mean(firsts))


def test_items(flat: Run, test: Path):
    """The labelled test rows: a CSV, or a folder read as the run's own [data] reads its images
    (a data.pattern recipe's test folder; names its pattern leaves out of training, as faces of
    another race, are left out of the test as the recipe says)."""
    attributes = flat.hierarchy.heads if isinstance(flat.hierarchy, FactorHierarchy) else ()
    if test.is_dir() and flat.recipe.data.pattern:
        data = dataclasses.replace(flat.recipe.data, images=str(test))
        return load_training_items(data, attributes, check_files=False)
    items = load_input_items(test, flat.hierarchy.class_names, attributes=attributes)
    if not items.has_labels:
        raise SystemExit(f"--test {test}: not every row has a label to score (a folder of images is read with "
                         f"labels only by a data.pattern recipe, and {flat.root}'s reads a CSV)")
    return items


def score(out: Path, names: list[str], test_path: Path) -> dict:
    """Each run's out-of-fold and test macro-F1 (its recipe's pipeline), training cost and first
    epoch's loss, and flat − each, out-of-fold and on the test set, with paired intervals."""
    runs = {name: Run.open(out / name) for name in names}
    flat = runs["flat"]
    classes = flat.hierarchy.class_names
    test = test_items(flat, test_path)
    rows, labels = {}, {}
    for name, run in runs.items():
        report = score_run(run)
        oof_labels = report.outcomes[report.chosen].labels
        test_labels = predict_items(run, test, inference=Inference(workers=0)).probs.argmax(1)
        labels[name] = oof_labels, test_labels
        cost = training_cost(run)
        rows[name] = {"oof": report.pipelines[report.chosen]["macro_f1"],
                      "test": scores(test.labels, test_labels, len(classes))["macro_f1"],
                      "first_loss": _first_epoch_loss(run), "chance": math.log(len(classes)),
                      "seconds": cost["seconds"], "images": cost["images"]}
    oof_targets = report.labels
    for name in rows:
        rows[name]["flat_minus"] = {
            "oof": paired_difference(oof_targets, labels["flat"][0], labels[name][0], len(classes)),
            "test": paired_difference(test.labels, labels["flat"][1], labels[name][1], len(classes))}
    return rows


def _interval(difference: dict) -> str:
    return f"{difference['difference'] * 100:+.2f} ({difference['low'] * 100:+.2f} to {difference['high'] * 100:+.2f})"


def main() -> None:
    parser = benchmark_parser(__doc__, recipe=True, out_required=True)
    parser.add_argument("--test", type=Path, required=True, help="the labelled test rows: a CSV, or a folder "
                                                                 "the recipe's data.pattern labels")
    parser.add_argument("--also", action="append", default=[], metavar="NAME")
    parser.add_argument("--step", action="append", choices=["flat", "probe", "report"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    steps = args.step or ["flat", "probe", "report"]
    if "flat" in steps and not _finished(args.out / "flat"):
        fit_coarse(recipe_of(args.recipe, args.overrides), args.out / "flat")
    if "probe" in steps and not _finished(args.out / "probe"):
        linear_probe(args.out / "flat", args.out / "probe")
    if "report" in steps:
        rows = score(args.out, ["probe", "flat", *args.also], args.test)
        (args.out / "goal.json").write_text(json.dumps(rows, indent=1) + "\n")
        print(markdown_table(
            ["run", "OOF macro-F1", "test macro-F1", "flat − this, OOF", "flat − this, test",
             "first epoch's loss / ln C", "training seconds"],
            [[name, f"{row['oof']:.4f}", f"{row['test']:.4f}", _interval(row["flat_minus"]["oof"]),
              _interval(row["flat_minus"]["test"]),
              f"{row['first_loss']:.3f} / {row['chance']:.3f}" if row["first_loss"] is not None else "",
              f"{row['seconds']:.0f}"] for name, row in rows.items()]))


if __name__ == "__main__":
    main()
