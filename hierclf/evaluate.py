"""The whole pipeline scored out-of-fold, for each combiner, beside the flat model on the same folds.

Every number here comes from predictions on rows the predicting models never trained on: the
coarse stage's and each specialist's out-of-fold outputs are combined row by row, and the
stacking combiner is itself scored by a cross-validation over the same folds.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, StratifiedKFold, cross_val_predict

from hierclf.combine import product, routed, stacking_features
from hierclf.errors import RunError
from hierclf.hierarchy import FactorHierarchy
from hierclf.metrics import confusion, head_scores, most_confused, per_class, scores
from hierclf.oof import load_oof
from hierclf.plots import save_confusion_png
from hierclf.runs import RunDir, read_json, read_npz, write_json, write_text


def evaluate_run(run_path: str | Path, against: str | Path | None = None) -> dict[str, Any]:
    """Score RUN's pipeline out-of-fold with every combiner; write report.json, report.md and
    confusion.png (of the recipe's combiner) into the run folder."""
    run = RunDir(run_path)
    recipe, hierarchy = run.recipe(), run.hierarchy()
    oof = load_oof(run, hierarchy)
    names, num_classes = hierarchy.class_names, hierarchy.num_classes
    report: dict[str, Any] = {
        "run": str(run.root), "rows": int(len(oof.ids)), "classes": list(names),
        "groups": [{"name": g.name, "classes": [names[m] for m in g.members]} for g in hierarchy.groups],
    }
    if isinstance(hierarchy, FactorHierarchy):
        chosen = recipe.combine.method  # product or stacking: the recipe refuses routed with heads
        joint = product(hierarchy, oof.coarse_probs, oof.specialist_probs)
        predicted = {"product": joint.argmax(1), "stacking": _stacking_oof(hierarchy, oof, recipe.combine.stacking_c)}
        report["heads"] = _head_report(hierarchy, oof, predicted["product"])
    elif hierarchy.is_flat:
        chosen = "flat"
        predicted = {"flat": oof.coarse_probs.argmax(1)}
        report["coarse"] = scores(oof.labels, predicted["flat"], num_classes)
    else:
        chosen = recipe.combine.method
        coarse_top = oof.coarse_probs.argmax(1)
        report["coarse"] = scores(hierarchy.coarse_targets(oof.labels), coarse_top, len(hierarchy.coarse_names))
        # the coarse stage's accuracy is the routing accuracy: it picks the right group or class
        report["routing"] = {"accuracy": report["coarse"]["accuracy"], "per_group": {
            g.name: float((coarse_top[np.isin(oof.labels, g.members)] == hierarchy.coarse_index(g)).mean())
            for g in hierarchy.groups}}
        report["specialists"] = {g.name: read_json(run.summary_path(run.specialist_stage(g)))
                                 for g in hierarchy.groups}
        outcome = routed(hierarchy, oof.coarse_probs, lambda name, rows: oof.specialist_probs[name][rows],
                         threshold=recipe.combine.route_threshold)
        predicted = {"product": product(hierarchy, oof.coarse_probs, oof.specialist_probs).argmax(1),
                     "routed": outcome.labels,
                     "stacking": _stacking_oof(hierarchy, oof, recipe.combine.stacking_c)}
    pipelines = {name: _pipeline(oof.labels, labels, names) for name, labels in predicted.items()}
    if "routed" in pipelines:
        pipelines["routed"]["specialist_share"] = {name: float(len(rows) / len(oof.ids))
                                                   for name, rows in outcome.ran_on.items()}
    report["pipelines"], report["chosen"] = pipelines, chosen
    if against is not None:
        report["flat"] = _flat_run_scores(run, RunDir(against), oof.ids, oof.labels, names)
    write_json(run.root / "report.json", report)
    write_text(run.root / "report.md", report_markdown(report))
    write_text(run.root / "oof-predictions.csv", _predictions_csv(oof.ids, oof.labels, oof.folds, predicted, names))
    matrix = confusion(oof.labels, predicted[chosen], num_classes)
    save_confusion_png(run.root / "confusion.png", matrix, names, f"{run.root.name}: {chosen}, out-of-fold")
    return report


def _head_report(hierarchy: FactorHierarchy, oof, predicted: np.ndarray) -> dict[str, dict[str, Any]]:
    """Each head's accuracy and macro-F1: the coarse model's head, its specialist where it has one,
    and in the product pipeline (which uses the specialist in place of the head)."""
    values = hierarchy.decode(oof.labels)
    coarse = hierarchy.split(oof.coarse_probs)
    final = head_scores(oof.labels, predicted, hierarchy.shapes)
    report = {}
    for column, head in enumerate(hierarchy.heads):
        entry: dict[str, Any] = {"values": list(head.values),
                                 "coarse": scores(values[:, column], coarse[head.name].argmax(1), head.size)}
        if head.name in oof.specialist_probs:
            entry["specialist"] = scores(values[:, column], oof.specialist_probs[head.name].argmax(1), head.size)
        entry["product"] = final[head.name]
        report[head.name] = entry
    return report


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


def _stacking_oof(hierarchy, oof, c: float) -> np.ndarray:
    """The stacking combiner's own out-of-fold labels: fit on the other folds' rows, predict each fold."""
    features = stacking_features(hierarchy, oof.coarse_probs, oof.specialist_probs)
    if len(np.unique(oof.folds)) > 1:
        splitter = PredefinedSplit(oof.folds)
    else:  # a single hold-out: cross-validate inside it
        smallest = np.bincount(oof.labels).astype(float)
        splitter = StratifiedKFold(n_splits=int(max(2, min(5, smallest[smallest > 0].min()))), shuffle=True,
                                   random_state=0)
    probs = cross_val_predict(LogisticRegression(C=c, max_iter=2000), features, oof.labels, cv=splitter,
                              method="predict_proba")
    return np.unique(oof.labels)[probs.argmax(1)]


def _flat_run_scores(run: RunDir, flat: RunDir, ids: np.ndarray, labels: np.ndarray,
                     names: tuple[str, ...]) -> dict[str, Any]:
    """The flat run's out-of-fold scores on the same rows, after checking it used the same folds."""
    if not flat.hierarchy().is_flat:
        raise RunError(f"--against {flat.root}: that run has groups or heads; compare against a flat run")
    mine, theirs = read_npz(run.folds_path), read_npz(flat.folds_path)
    if not all(np.array_equal(mine[k], theirs[k]) for k in ("ids", "labels", "fold")):
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
    if report["groups"]:
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
