"""The whole pipeline scored out-of-fold, for each combiner, beside the flat model on the same folds.

Every number here comes from predictions on rows the predicting models never trained on: the
coarse stage's and each specialist's out-of-fold outputs are combined row by row, and a combiner
that learns is fit fold by fold on the other folds' rows, so its score is out-of-fold too.

Each pipeline's cost stands beside its score (`hierclf.report.costs`), and flat controls given the same
extra budget (more epochs, or more seeds scored as an ensemble) show whether the hierarchy beats
what its compute would have bought the flat model.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

from hierclf.run.calibration import calibration_report
from hierclf.combine.combiners import COMBINERS, Combined, Combiner
from hierclf.report.costs import inference_cost, training_cost
from hierclf.errors import RunError
from hierclf.run.files import check_writable, read_json, read_npz, write_json, write_text
from hierclf.hierarchy.kinds import Hierarchy
from hierclf.report.html import report_html
from hierclf.metrics import calibration, confusion, most_confused, per_class, reliability, scores
from hierclf.run.outputs import RunOOF, load_oof
from hierclf.report.plots import save_confusion_png, save_reliability_png
from hierclf.run.folder import Run


OOF_ESTIMATES = ("Each row's out-of-fold prediction comes from the one fold model that did not train on it, so "
                 "these figures estimate one fold model. `predict` soft-votes all K fold models, which "
                 "usually scores higher, most on small data; a seed-ensemble control estimates that gain "
                 "leak-free (ensemble_gain).")


def evaluate_run(run_path: str | Path, against: str | Path | None = None,
                 controls: Sequence[Sequence[str | Path]] = ()) -> dict[str, Any]:
    """Score RUN's pipeline out-of-fold with every combiner that applies, each with its training
    and inference cost and its calibration; write report.json, report.md, oof-predictions.csv,
    confusion.png and reliability.png (of the recipe's combiner), and report.html, all of it on
    one self-contained page, into the run folder.
    `against` is a flat run on the same folds (by default the run's flat coarse run, if it has
    one); each of `controls` is one or more flat runs on the same folds, scored as one
    soft-voting ensemble out-of-fold."""
    run = Run.open(run_path)
    check_writable(run.root, "run folder", folder=True)  # evaluate writes its report there
    if against is None and run.coarse_source is not None:
        against = run.coarse_source.root
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
    trained = training_cost(run)
    for name, outcome in combined.items():
        pipelines[name] = _pipeline(oof.labels, outcome.labels, names)
        pipelines[name].update(calibration(oof.labels, outcome.probs))
        share = {part: float(len(rows) / len(oof.ids)) for part, rows in outcome.ran_on.items()}
        if outcome.ran_on:
            pipelines[name]["specialist_share"] = share
        pipelines[name]["training"] = trained
        pipelines[name]["inference"] = inference_cost(run, share if outcome.ran_on else None)
    report["pipelines"], report["chosen"] = pipelines, chosen
    report["oof_estimates"] = OOF_ESTIMATES
    report["calibration"] = calibration_report(run)
    if against is not None:
        report["flat"] = _flat_runs_scores(run, [against], oof.ids, oof.labels, names, "--against")
    report["controls"] = [_flat_runs_scores(run, paths, oof.ids, oof.labels, names, "--control")
                          for paths in controls]
    report["verdict"] = verdict(report)
    predicted = {name: outcome.labels for name, outcome in combined.items()}
    write_json(run.root / "report.json", report)
    write_text(run.root / "report.md", report_markdown(report))
    write_text(run.root / "oof-predictions.csv", _predictions_csv(oof.ids, oof.labels, oof.folds, predicted, names))
    matrix = confusion(oof.labels, predicted[chosen], len(names))
    save_confusion_png(run.root / "confusion.png", matrix, names, f"{run.root.name}: {chosen}, out-of-fold")
    binned = reliability(oof.labels, combined[chosen].probs)
    save_reliability_png(run.root / "reliability.png", binned,
                         f"{run.root.name}: {chosen}, out-of-fold (ECE {pipelines[chosen]['ece']:.4f})")
    write_text(run.root / "report.html", report_html(run, report, oof.ids, oof.labels, predicted[chosen], binned,
                                                     matrix))
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


def _flat_runs_scores(run: Run, paths: Sequence[str | Path], ids: np.ndarray, labels: np.ndarray,
                      names: tuple[str, ...], option: str) -> dict[str, Any]:
    """One or more flat runs on the same rows and folds, their out-of-fold probabilities averaged
    (each row is still predicted only by models that never trained on it): scores and cost. With
    several runs, `ensemble_gain` is the ensemble's macro-F1 minus its members' mean."""
    probs, members, trained, inference = [], [], [], []
    for path in paths:
        flat = Run.open(path)
        if not flat.hierarchy.is_flat:
            raise RunError(f"{option} {flat.root}: that run has {flat.hierarchy.describe()}; compare against a "
                           f"flat run")
        if not run.folds.matches(flat.folds):
            raise RunError(f"{option} {flat.root}: it was split into other folds (different data, folds.count or "
                           f"folds.seed); compare runs made with the same [data] and [folds]")
        flat_oof = read_npz(flat.oof_path("coarse")) if flat.oof_path("coarse").exists() else None
        if flat_oof is None or not np.array_equal(flat_oof["ids"], ids):
            raise RunError(f"{option} {flat.root}: its out-of-fold file is missing or incomplete; finish fit-coarse "
                           f"there")
        probs.append(flat_oof["probs"].astype(np.float64))
        members.append(scores(labels, flat_oof["probs"].argmax(1), len(names))["macro_f1"])
        trained.append(training_cost(flat))
        inference.append(inference_cost(flat))
    result = _pipeline(labels, np.mean(probs, axis=0).argmax(1), names)
    result.update(calibration(labels, np.mean(probs, axis=0)))
    result.update(runs=[str(Path(path)) for path in paths],
                  training=_summed(trained, ("images", "megapixels", "seconds")),
                  inference=_summed(inference, ("passes", "megapixels")))
    if len(paths) == 1:
        result["run"] = str(Path(paths[0]))
    else:
        result["members_macro_f1"] = members
        result["ensemble_gain"] = result["macro_f1"] - float(np.mean(members))
    return result


def _summed(costs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """The costs of several runs, added key by key (an ensemble costs all of its runs)."""
    return {key: float(sum(cost[key] for cost in costs)) for key in keys}


def verdict(report: dict[str, Any]) -> list[str]:
    """Whether the recipe's pipeline beats the flat run and each control, with the training
    images each took relative to the flat run (when one is compared against)."""
    chosen = report["pipelines"][report["chosen"]]
    base = report.get("flat", {}).get("training", {}).get("images") or None
    lines = []
    for label, other in [("the flat run", report.get("flat"))] + [
            (f"control {', '.join(c['runs'])}", c) for c in report.get("controls", [])]:
        if other is None:
            continue
        gain = chosen["macro_f1"] - other["macro_f1"]
        budget = (f" at {chosen['training']['images'] / base:.2f}× the flat run's training images against "
                  f"{other['training']['images'] / base:.2f}×") if base else ""
        lines.append(f"{report['chosen']} {'beats' if gain > 0 else 'does not beat'} {label} "
                     f"({chosen['macro_f1']:.4f} vs {other['macro_f1']:.4f}, {gain * 100:+.2f} points){budget}")
    return lines


def score_rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, scores, is the recipe's combiner) for the flat run compared against, each control,
    then each pipeline."""
    rows = [("flat", report["flat"], False)] if "flat" in report else []
    rows += [(f"control {number}", control, False) for number, control in enumerate(report.get("controls", []), 1)]
    several = len(report["pipelines"]) > 1
    return rows + [(name, result, several and name == report["chosen"])
                   for name, result in report["pipelines"].items()]


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: the scores side by side, the per-class table, the most-confused pairs."""
    lines = [f"# Out-of-fold evaluation of `{report['run']}`", "",
             f"{report['rows']} rows, each predicted by models that never trained on it.", ""]
    if report.get("groups"):
        lines += ["Groups: " + "; ".join(f"**{g['name']}** = {', '.join(g['classes'])}" for g in report["groups"]), ""]
    base = report.get("flat", {}).get("training", {}).get("images") or None
    lines += ["| pipeline | macro-F1 | accuracy | ECE | NLL | training images | × flat | training s | inference "
              "passes per image | megapixels |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, result, chosen in score_rows(report):
        label = f"{name} (`{'`, `'.join(result['runs'])}`)" if "runs" in result else name
        training, inference = result["training"], result["inference"]
        ratio = f"{training['images'] / base:.2f}" if base else "–"
        lines.append(f"| {label}{' (chosen)' if chosen else ''} | {result['macro_f1']:.4f} | {result['accuracy']:.4f} "
                     f"| {result['ece']:.4f} | {result['nll']:.4f} | {training['images']:,.0f} | {ratio} "
                     f"| {training['seconds']:.0f} | {inference['passes']:.2f} | {inference['megapixels']:.4f} |")
    lines += ["", "ECE: expected calibration error (15 bins of top probability); NLL: mean negative "
                  "log-likelihood of the true class. Both out-of-fold; lower is better.", "", report["oof_estimates"]]
    for control in report.get("controls", []):
        if "ensemble_gain" in control:
            members = ", ".join(f"{f1:.4f}" for f1 in control["members_macro_f1"])
            lines.append(f"The {len(control['runs'])}-run ensemble scores {control['ensemble_gain'] * 100:+.2f} "
                         f"points over its members' mean ({members}).")
    lines += [""] + [f"- {line}" for line in report.get("verdict", [])]
    if report.get("calibration"):
        lines += ["", "Temperature scaling (combine.calibrate), fit on each stage's out-of-fold outputs:", "",
                  "| stage | output | temperature | NLL before | NLL after | ECE before | ECE after |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for stage, blocks in report["calibration"].items():
            for block, entry in blocks.items():
                lines.append(f"| {stage} | {block} | {entry['temperature']:.3f} | {entry['before']['nll']:.4f} | "
                             f"{entry['after']['nll']:.4f} | {entry['before']['ece']:.4f} | "
                             f"{entry['after']['ece']:.4f} |")
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
