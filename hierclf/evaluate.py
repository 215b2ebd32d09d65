"""The whole pipeline scored out-of-fold, for each combiner, beside the flat model on the same folds.

Every number here comes from predictions on rows the predicting models never trained on: the
coarse stage's and each specialist's out-of-fold outputs are combined row by row, and a combiner
that learns is fit fold by fold on the other folds' rows, so its score is out-of-fold too.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from hierclf.combiners import COMBINERS, Combined, Combiner
from hierclf.errors import RunError
from hierclf.files import read_json, read_npz, write_json, write_text
from hierclf.hierarchy import Hierarchy
from hierclf.metrics import confusion, most_confused, per_class, scores
from hierclf.oof import RunOOF, load_oof
from hierclf.plots import save_confusion_png
from hierclf.runs import Run


def evaluate_run(run_path: str | Path, against: str | Path | None = None) -> dict[str, Any]:
    """Score RUN's pipeline out-of-fold with every combiner that applies; write report.json,
    report.md, oof-predictions.csv and confusion.png (of the recipe's combiner) into the run folder."""
    run = Run.open(run_path)
    hierarchy, recipe = run.hierarchy, run.recipe
    oof = load_oof(run)
    names = hierarchy.class_names
    report: dict[str, Any] = {"run": str(run.root), "rows": int(len(oof.ids)), "classes": list(names)}
    report.update(hierarchy.stage_report(oof.labels, oof.coarse_probs, oof.specialist_probs))
    if run.specialist_stages:
        report["specialists"] = {name: read_json(run.summary_path(stage.name))
                                 for name, stage in run.specialist_stages.items()}
    method = recipe.combine.method
    chosen = hierarchy.combiner_for(method, f'{run.recipe_path}: combine.method = "{method}"')
    combined = {name: out_of_fold(COMBINERS[name].from_config(recipe.combine), hierarchy, oof, recipe.folds.seed)
                for name in hierarchy.combiners}
    pipelines = {}
    for name, outcome in combined.items():
        pipelines[name] = _pipeline(oof.labels, outcome.labels, names)
        if outcome.ran_on:
            pipelines[name]["specialist_share"] = {part: float(len(rows) / len(oof.ids))
                                                   for part, rows in outcome.ran_on.items()}
    report["pipelines"], report["chosen"] = pipelines, chosen
    if against is not None:
        report["flat"] = _flat_run_scores(run, Run.open(against), oof.ids, oof.labels, names)
    predicted = {name: outcome.labels for name, outcome in combined.items()}
    write_json(run.root / "report.json", report)
    write_text(run.root / "report.md", report_markdown(report))
    write_text(run.root / "oof-predictions.csv", _predictions_csv(oof.ids, oof.labels, oof.folds, predicted, names))
    matrix = confusion(oof.labels, predicted[chosen], len(names))
    save_confusion_png(run.root / "confusion.png", matrix, names, f"{run.root.name}: {chosen}, out-of-fold")
    return report


def out_of_fold(combiner: Combiner, hierarchy: Hierarchy, oof: RunOOF, seed: int = 0) -> Combined:
    """The combiner's own out-of-fold outcome: one that learns is fit on the other folds' rows and
    combines each fold's (inside a single hold-out, on a stratified K-fold of it, seeded by
    `seed`); one that learns nothing combines every row at once."""
    parts = list(oof.specialist_probs)
    if not combiner.fits:
        return combiner.combine(hierarchy, oof.coarse_probs, parts, oof.outputs.run_specialist)
    probs = np.zeros((len(oof.ids), hierarchy.num_classes))
    for held_out in _held_out_rows(oof, seed):
        training = np.setdiff1d(np.arange(len(oof.ids)), held_out)
        combiner.fit(hierarchy, oof.outputs.subset(training))
        outputs = oof.outputs.subset(held_out)
        probs[held_out] = combiner.combine(hierarchy, outputs.coarse_probs, parts, outputs.run_specialist).probs
    return Combined(probs=probs, labels=probs.argmax(1))


def _held_out_rows(oof: RunOOF, seed: int) -> list[np.ndarray]:
    """Each fold's rows; for a single hold-out, a stratified K-fold inside it (K ≤ 5, and no more
    than the rarest class has rows)."""
    if len(np.unique(oof.folds)) > 1:
        return [np.flatnonzero(oof.folds == fold) for fold in np.unique(oof.folds)]
    counts = np.bincount(oof.labels).astype(float)
    splitter = StratifiedKFold(n_splits=int(max(2, min(5, counts[counts > 0].min()))), shuffle=True,
                               random_state=seed)
    return [held_out for _, held_out in splitter.split(np.zeros(len(oof.labels)), oof.labels)]


def _pipeline(targets: np.ndarray, predicted: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    result: dict[str, Any] = scores(targets, predicted, len(names))
    result["per_class"] = per_class(targets, predicted, names)
    result["most_confused"] = most_confused(confusion(targets, predicted, len(names)), names)
    return result


def _predictions_csv(ids: np.ndarray, labels: np.ndarray, folds: np.ndarray, predicted: dict[str, np.ndarray],
                     names: tuple[str, ...]) -> str:
    """One row per image: its label, its fold, and what each pipeline said, for error analysis."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "label", "fold", *predicted])
    for row, image_id in enumerate(ids):
        writer.writerow([image_id, names[labels[row]], int(folds[row]), *(names[p[row]] for p in predicted.values())])
    return buffer.getvalue()


def _flat_run_scores(run: Run, flat: Run, ids: np.ndarray, labels: np.ndarray,
                     names: tuple[str, ...]) -> dict[str, Any]:
    """The flat run's out-of-fold scores on the same rows, after checking it used the same folds."""
    if not flat.hierarchy.is_flat:
        raise RunError(f"--against {flat.root}: that run has {flat.hierarchy.describe()}; compare against a flat run")
    if not run.folds.matches(flat.folds):
        raise RunError(f"--against {flat.root}: it was split into other folds (different data, folds.count or "
                       f"folds.seed); compare runs made with the same [data] and [folds]")
    flat_oof = read_npz(flat.oof_path("coarse")) if flat.oof_path("coarse").exists() else None
    if flat_oof is None or not np.array_equal(flat_oof["ids"], ids):
        raise RunError(f"--against {flat.root}: its out-of-fold file is missing or incomplete; finish fit-coarse there")
    result = _pipeline(labels, flat_oof["probs"].argmax(1), names)
    result["run"] = str(flat.root)
    return result


def score_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, scores, is the recipe's combiner) for the flat run compared against, then each pipeline."""
    rows = [("flat", report["flat"], False)] if "flat" in report else []
    several = len(report["pipelines"]) > 1
    return rows + [(name, result, several and name == report["chosen"])
                   for name, result in report["pipelines"].items()]


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: the scores side by side, the per-class table, the most-confused pairs."""
    lines = [f"# Out-of-fold evaluation of `{report['run']}`", "",
             f"{report['rows']} rows, each predicted by models that never trained on it.", ""]
    if report.get("groups"):
        lines += ["Groups: " + "; ".join(f"**{g['name']}** = {', '.join(g['classes'])}" for g in report["groups"]), ""]
    lines += ["| pipeline | macro-F1 | accuracy |", "| --- | --- | --- |"]
    for name, result, chosen in score_rows(report):
        label = f"flat (`{result['run']}`)" if name == "flat" and "run" in result else name
        lines.append(f"| {label}{' (chosen)' if chosen else ''} | {result['macro_f1']:.4f} | {result['accuracy']:.4f} |")
    if "heads" in report:
        lines += ["", "| head | coarse macro-F1 | specialist macro-F1 | in the product: accuracy | macro-F1 |",
                  "| --- | --- | --- | --- | --- |"]
        for name, head in report["heads"].items():
            specialist = f"{head['specialist']['macro_f1']:.4f}" if "specialist" in head else "–"
            lines.append(f"| {name} | {head['coarse']['macro_f1']:.4f} | {specialist} | "
                         f"{head['product']['accuracy']:.4f} | {head['product']['macro_f1']:.4f} |")
    if "routing" in report:
        routing = report["routing"]
        lines += ["", f"Routing accuracy (the coarse stage picks the right group or class; an upper bound for "
                      f"the routed pipeline): **{routing['accuracy']:.4f}**. Per group: "
                  + ", ".join(f"{name} {value:.4f}" for name, value in routing["per_group"].items()) + "."]
        lines += ["", "Specialists, on their own group's rows: " + ", ".join(
            f"{name} macro-F1 {s['oof_macro_f1']:.4f}" for name, s in report["specialists"].items()) + "."]
    chosen = report["pipelines"][report["chosen"]]
    flat_classes = report.get("flat", {}).get("per_class")
    lines += ["", f"## Per class ({report['chosen']})", "",
              "| class | precision | recall | F1 | support |" + (" flat F1 |" if flat_classes else ""),
              "| --- | --- | --- | --- | --- |" + (" --- |" if flat_classes else "")]
    for name, row in chosen["per_class"].items():
        line = (f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | "
                f"{int(row['support'])} |")
        lines.append(line + (f" {flat_classes[name]['f1-score']:.4f} |" if flat_classes else ""))
    lines += ["", f"## Most confused ({report['chosen']})", ""]
    lines += [f"- {p['true']} taken for {p['predicted']}: {p['count']} ({p['share_of_errors']:.0%} of errors)"
              for p in chosen["most_confused"]] or ["- no errors"]
    return "\n".join(lines) + "\n"
