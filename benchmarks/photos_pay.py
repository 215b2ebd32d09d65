"""Does the hierarchy pay on real photos, against the flat model given the same pixels? Every
pipeline of the run folders under --out (trained beforehand with the hierclf commands that
docs/benchmarks.md lists, "The hierarchy on real photos"), scored out-of-fold and on the test
set, with its training cost as multiples of the flat run's (images, megapixels, seconds), its
inference passes, and its difference to the best pipeline with a 95 % paired-bootstrap interval:

    python benchmarks/photos_pay.py --out runs/photos/clothing --test data/clothing/test.csv \\
        --hierarchy tops-128 --hierarchy tops-lite2 --run flat-112 --run flat-9ep --run flat-128 \\
        --ensemble flat,seed1
    python benchmarks/photos_pay.py --out runs/photos/faces --test data/utkface/test \\
        --hierarchy female-96 --run heads --run flat-76 --run flat-9ep --run flat-96 --attributes

`--against NAME` adds each pipeline minus that one (a matched control) with its interval.
`--run NAME`: a run scored by its recipe's pipeline (a flat control, or attribute heads with no
specialist); `--hierarchy NAME`: every combiner of a run with specialists; `--ensemble A,B`: the
soft vote of flat runs (the seed ensemble). `--group A,B,…` adds the out-of-fold accuracy on
those classes' rows and on the rest. `--attributes` reads class names `gender/age` as
attributes: each row adds the macro-F1 of each attribute alone and, for the last one (an ordered
bin), the share of its errors that fall in the next bin (<30 for 30-59, 30-59 for >=60...).
Writes OUT/photos-pay.json.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from harness import benchmark_parser
from hierclf import Inference, paired_difference, predict_items, Run, score_run, scores, training_cost

from finetune_goal import test_items


def _flat_like(run: Run, test) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A run's recipe pipeline: cost, and its out-of-fold and test probabilities and labels."""
    report = score_run(run)
    outcome = report.outcomes[report.chosen]
    probs = predict_items(run, test, inference=Inference(workers=0)).probs
    cost = {**training_cost(run), "passes": report.pipelines[report.chosen]["inference"]["passes"]}
    return cost, outcome.probs, outcome.labels, probs, probs.argmax(1)


def _every_combiner(run: Run, test, combiners: list[str]) -> dict[str, np.ndarray]:
    """Each combiner's test labels, as `hierclf predict --combiner` gives them (the stages run once
    per combiner: seconds on a test set of a thousand photos)."""
    return {name: predict_items(run, test, combiner=name, inference=Inference(workers=0)).labels
            for name in combiners}


def collect(args: argparse.Namespace) -> tuple[dict, dict, np.ndarray, np.ndarray, list[str]]:
    """Every pipeline's cost and out-of-fold and test labels."""
    flat = Run.open(args.out / args.flat)
    classes = list(flat.hierarchy.class_names)
    test = test_items(flat, args.test)
    rows, labels, probs, costs = {}, {}, {}, {}
    for name in [args.flat, *args.run, *{m for e in args.ensemble for m in e.split(",")} - {args.flat, *args.run}]:
        costs[name], oof_probs, oof_labels, test_probs, test_labels = _flat_like(Run.open(args.out / name), test)
        probs[name] = oof_probs, test_probs
        if name == args.flat or name in args.run:
            rows[name], labels[name] = costs[name], (oof_labels, test_labels)
    for members in args.ensemble:
        names = members.split(",")
        rows[" + ".join(names)] = {unit: sum(costs[m][unit] for m in names)
                                   for unit in ("images", "megapixels", "seconds", "passes")}
        labels[" + ".join(names)] = tuple(np.mean([probs[m][i] for m in names], axis=0).argmax(1) for i in (0, 1))
    oof_targets = score_run(flat).labels
    for name in args.hierarchy:
        run = Run.open(args.out / name)
        report = score_run(run)
        combined = _every_combiner(run, test, list(report.pipelines))
        for combiner, result in report.pipelines.items():
            row = f"{name}, {combiner}"
            rows[row] = {**training_cost(run), "passes": result["inference"]["passes"]}
            labels[row] = report.outcomes[combiner].labels, combined[combiner]
    for name, row in rows.items():
        row["oof"] = scores(oof_targets, labels[name][0], len(classes))["macro_f1"]
        row["test"] = scores(test.labels, labels[name][1], len(classes))["macro_f1"]
    return rows, labels, oof_targets, test.labels, classes


def _attributes(classes: list[str], targets: np.ndarray, predicted: np.ndarray) -> dict:
    """Each attribute's macro-F1 alone, and the share of the last (ordered) attribute's errors
    that land in the adjacent bin."""
    parts = [name.split("/") for name in classes]
    result = {}
    for position in range(len(parts[0])):
        values = list(dict.fromkeys(part[position] for part in parts))
        index = np.asarray([values.index(part[position]) for part in parts])
        truth, guess = index[targets], index[predicted]
        result[f"attribute{position}"] = scores(truth, guess, len(values))["macro_f1"]
        if position == len(parts[0]) - 1:
            wrong = truth != guess
            result["errors"] = int(wrong.sum())
            result["adjacent"] = float((np.abs(truth - guess)[wrong] == 1).mean()) if wrong.any() else 0.0
    return result


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--flat", default="flat")
    parser.add_argument("--run", action="append", default=[], metavar="NAME")
    parser.add_argument("--hierarchy", action="append", default=[], metavar="NAME")
    parser.add_argument("--ensemble", action="append", default=[], metavar="A,B")
    parser.add_argument("--attributes", action="store_true")
    parser.add_argument("--against", default=None, metavar="NAME",
                        help="also each pipeline minus this one (a matched control), with its interval")
    parser.add_argument("--group", default="", metavar="A,B,…",
                        help="classes whose rows are scored apart (out-of-fold accuracy on them and on the rest)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows, labels, oof_targets, test_targets, classes = collect(args)
    flat = rows[args.flat]
    best = max(rows, key=lambda name: rows[name]["oof"])
    group = [classes.index(name) for name in args.group.split(",") if name]
    print(f"| pipeline | OOF macro-F1 | test macro-F1 | images | megapixels | seconds | passes | "
          f"{best} − this, OOF | {best} − this, test |" + (" attributes (test) | age errors adjacent |"
                                                            if args.attributes else "")
          + (" OOF accuracy in group / rest |" if group else "")
          + (f" this − {args.against}, OOF | this − {args.against}, test |" if args.against else ""))
    print("| --- " * (9 + 2 * args.attributes + bool(group) + 2 * bool(args.against)) + "|")
    for name, row in rows.items():
        row["best_minus"] = {
            "oof": paired_difference(oof_targets, labels[best][0], labels[name][0], len(classes)),
            "test": paired_difference(test_targets, labels[best][1], labels[name][1], len(classes))}
        cells = [f"{row['oof']:.4f}", f"{row['test']:.4f}"] + [
            f"{row[unit] / flat[unit]:.2f}×" for unit in ("images", "megapixels", "seconds")] + [
            f"{row['passes']:.1f}", _interval(row["best_minus"]["oof"]), _interval(row["best_minus"]["test"])]
        if args.attributes:
            row["attributes"] = _attributes(classes, test_targets, labels[name][1])
            row["attributes_oof"] = _attributes(classes, oof_targets, labels[name][0])
            parts = row["attributes"]
            cells += [" / ".join(f"{parts[key]:.4f}" for key in sorted(parts) if key.startswith("attribute")),
                      f"{parts['adjacent']:.0%} of {parts['errors']}"]
        if group:
            inside = np.isin(oof_targets, group)
            right = labels[name][0] == oof_targets
            row["group_accuracy"], row["rest_accuracy"] = float(right[inside].mean()), float(right[~inside].mean())
            cells.append(f"{row['group_accuracy']:.4f} / {row['rest_accuracy']:.4f}")
        if args.against:
            row["minus_against"] = {split: paired_difference(targets, labels[name][side], labels[args.against][side],
                                                             len(classes))
                                    for split, side, targets in (("oof", 0, oof_targets), ("test", 1, test_targets))}
            cells += [_interval(row["minus_against"]["oof"]), _interval(row["minus_against"]["test"])]
        print(f"| {name} | " + " | ".join(cells) + " |")
    (args.out / "photos-pay.json").write_text(json.dumps({"best": best, "rows": rows}, indent=1) + "\n")


def _interval(difference: dict) -> str:
    return f"{difference['difference'] * 100:+.2f} ({difference['low'] * 100:+.2f} to {difference['high'] * 100:+.2f})"


if __name__ == "__main__":
    main()
