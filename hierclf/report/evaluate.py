"""The whole pipeline scored out-of-fold, for each combiner, beside the flat model on the same folds.

Every number here comes from predictions on rows the predicting models never trained on: the
coarse stage's and each specialist's out-of-fold outputs are combined row by row, and a combiner
that learns is fit fold by fold on the other folds' rows, so its score is out-of-fold too.

Each pipeline's cost stands beside its score (`costs`), and flat controls given the same extra
budget (more epochs, or more seeds scored as an ensemble, `controls`) show whether the hierarchy
beats what its compute would have bought the flat model. `score_run` computes the `Report`;
`evaluate_run` also writes it into the run folder, each file by its renderer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.model_selection import StratifiedKFold

from hierclf.combine.base import Combined, Combiner
from hierclf.combine.registry import COMBINERS, applicable
from hierclf.errors import option
from hierclf.hierarchy.protocol import Hierarchy
from hierclf.metrics import calibration, confusion, paired_difference, reliability, scores
from hierclf.report.controls import flat_runs_scores, pipeline_scores
from hierclf.report.costs import inference_cost, training_cost
from hierclf.report.html import report_html
from hierclf.report.markdown import predictions_csv, report_markdown
from hierclf.figures import confusion_figure, reliability_figure
from hierclf.report.report import Report
from hierclf.run.calibration import calibration_report
from hierclf.run.files import check_writable, save_png, write_json, write_text
from hierclf.run.fold_files import read_summary
from hierclf.run.folder import Run
from hierclf.run.outputs import RunOOF, load_oof


def evaluate_run(run_path: str | Path, against: str | Path | None = None,
                 controls: Sequence[Sequence[str | Path]] = ()) -> Report:
    """Score a run's pipeline out-of-fold and write the report into the run folder: report.json,
    report.md, oof-predictions.csv, confusion.png and reliability.png (of the recipe's combiner),
    and report.html, all of it on one self-contained page.

    Args:
        run_path: a run whose every stage is trained.
        against: a flat run on the same folds (default: the run's hierarchy.coarse_run, if any).
        controls: each one or more flat runs on the same folds, scored as one soft-voting
            ensemble out-of-fold.

    Returns:
        The `Report`."""
    run = Run.open(run_path)
    check_writable(run.root, "run folder", folder=True)  # evaluate writes its report there
    report = score_run(run, against, controls)
    write_report(run, report)
    return report


def score_run(run: Run, against: str | Path | None = None, controls: Sequence[Sequence[str | Path]] = ()) -> Report:
    """The `Report` of `run`, computed from its out-of-fold files; nothing is written.

    Args:
        run: the run folder, opened.
        against: the flat run it is compared with (default: its coarse run, where it has one).
        controls: flat runs (each a list: an ensemble) scored on the same rows.

    Returns:
        The `Report` (`outcomes[name].labels`: each pipeline's out-of-fold labels; `to_dict()`)."""
    if against is None and run.coarse_source is not None:
        against = run.coarse_source.root
    hierarchy = run.hierarchy
    oof = load_oof(run)
    names = hierarchy.class_names
    chosen = run.combiner()
    outcomes = pipeline_outcomes(run, oof)
    needs = {name: COMBINERS[name].uses_specialists for name in outcomes}
    trained = {uses: training_cost(run, uses) for uses in set(needs.values())}  # once each, not per pipeline
    pipelines = {}
    for name, outcome in outcomes.items():
        pipelines[name] = pipeline_scores(oof.labels, outcome.labels, names)
        pipelines[name].update(calibration(oof.labels, outcome.probs))
        share = {part: float(len(rows) / len(oof.ids)) for part, rows in outcome.ran_on.items()}
        if outcome.ran_on:
            pipelines[name]["specialist_share"] = share
        pipelines[name]["training"] = trained[needs[name]]
        pipelines[name]["inference"] = inference_cost(run, share if outcome.ran_on else None)
    fine = oof.coarse_probs if hierarchy.is_flat else outcomes["product"].probs  # every run with parts has it
    chosen_labels = outcomes[chosen].labels
    flat = None if against is None else flat_runs_scores(run, [against], oof, option("against"), chosen_labels)
    return Report(run=str(run.root), classes=list(names),
                  section=hierarchy.stage_report(oof.labels, oof.coarse_probs, oof.specialist_probs, fine),
                  pipelines=pipelines, chosen=chosen, ids=oof.ids, labels=oof.labels, folds=oof.folds,
                  outcomes=outcomes, calibration=calibration_report(run), flat=flat,
                  specialists={name: read_summary(run.summary_path(stage.name))
                               for name, stage in run.specialist_stages.items()},
                  controls=[flat_runs_scores(run, paths, oof, option("controls"), chosen_labels) for paths in controls],
                  against_coarse=specialists_against_coarse(hierarchy, oof), part_noun=hierarchy.part_noun)


def pipeline_outcomes(run: Run, oof: RunOOF) -> dict[str, Combined]:
    """Every pipeline the run allows, out-of-fold: each applicable combiner, set up as the recipe
    says (`out_of_fold`)."""
    recipe = run.recipe
    return {name: out_of_fold(COMBINERS[name].from_config(recipe.combine), run.hierarchy, oof, recipe.folds.seed)
            for name in applicable(run.hierarchy)}


def specialists_against_coarse(hierarchy: Hierarchy, oof: RunOOF) -> list[dict[str, Any]]:
    """Each specialist beside the coarse stage on the term both supply (a head; a group's classes
    over a flat run), on that term's rows out-of-fold: their macro-F1 and the paired interval of
    the difference. A specialist below the coarse stage lowers what the product gives."""
    found = []
    for term, version in zip(hierarchy.terms, hierarchy.coarse_terms(oof.coarse_probs)):
        if term.part not in oof.specialist_probs or not term.from_coarse:
            continue
        targets = term.targets(oof.labels)
        rows = np.flatnonzero(targets >= 0)
        own, coarse = oof.specialist_probs[term.part][rows].argmax(1), version[rows].argmax(1)
        found.append({"part": term.part, "rows": int(len(rows)),
                      "specialist": scores(targets[rows], own, term.width)["macro_f1"],
                      "coarse": scores(targets[rows], coarse, term.width)["macro_f1"],
                      "paired_difference": paired_difference(targets[rows], own, coarse, term.width)})
    return found


REPORT_FILES = ("report.html", "report.md", "report.json", "oof-predictions.csv", "confusion.png", "reliability.png")
"""What `evaluate` writes into the run folder; report.html, the page to open, first."""


def write_report(run: Run, report: Report) -> None:
    """Every file of the report (REPORT_FILES), into the run folder, each written atomically."""
    chosen = report.chosen
    write_json(run.root / "report.json", report.to_dict())
    write_text(run.root / "report.md", report_markdown(report))
    write_text(run.root / "oof-predictions.csv", predictions_csv(report))
    matrix = confusion(report.labels, report.outcomes[chosen].labels, len(report.classes))
    save_png(run.root / "confusion.png", confusion_figure(matrix, report.classes,
                                                            f"{run.root.name}: {chosen}, out-of-fold"))
    binned = reliability(report.labels, report.outcomes[chosen].probs)
    save_png(run.root / "reliability.png", reliability_figure(
        binned, f"{run.root.name}: {chosen}, out-of-fold (ECE {report.pipelines[chosen]['ece']:.4f})"))
    write_text(run.root / "report.html", report_html(run, report, binned, matrix))


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
