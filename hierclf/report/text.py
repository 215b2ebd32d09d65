"""The lines the command line prints: a stage's out-of-fold summary after training, a run's
evaluation (from summary.json and oof.npz, or a `Report`), and the groups suggest-groups proposes."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hierclf.errors import RunError, option
from hierclf.hierarchy.layout import OutputLayout
from hierclf.hierarchy.stage import in_stage
from hierclf.hierarchy.suggest import attribute_values, suggestion
from hierclf.metrics import confusion, report_text
from hierclf.recipe.coerce import show_value
from hierclf.report.report import Report, budget_text
from hierclf.run.files import read_npz
from hierclf.run.folder import Run
from hierclf.run.outputs import load_oof


def stage_summary_lines(title: str, summary: dict[str, Any], run: Run) -> list[str]:
    """A stage's out-of-fold scores, each fold's, the bias/variance line, and a per-class report of
    each output block (with attribute heads, each head's), from its summary.json and oof.npz."""
    oof = read_npz(run.oof_path(summary["stage"]))  # a flat coarse run's stage lies in that run
    heads = summary.get("heads", {})
    layout = OutputLayout.from_spec_fields(summary["classes"], [[name, head["size"]] for name, head in heads.items()])
    joint = " (the joint class: every head right)" if len(layout.blocks) > 1 else ""
    lines = [f"\n{title} out-of-fold ({summary['rows']} rows, {len(summary['folds'])} folds){joint}: "
             f"macro-F1 {summary['oof_macro_f1']:.4f}  accuracy {summary['oof_accuracy']:.4f}"]
    for row in summary["folds"]:
        probe = f"; the linear probe of its starting weights {row['probe_macro_f1']:.4f}" if "probe_macro_f1" in row else ""
        kept = (f"its start kept (the linear probe as its head), no epoch of {row['epochs_run']} beat it"
                if row["best_epoch"] == 0 else f"best epoch {row['best_epoch']} of {row['epochs_run']}")
        lines.append(f"  fold {row['fold']}: macro-F1 {row['val_macro_f1']:.4f}  accuracy {row['val_accuracy']:.4f}"
                     f"  ({kept}{probe})")
    if "diagnosis" in summary:
        lines.append(f"  {summary['diagnosis']}")
    targets = layout.columns(oof["targets"])
    scored = in_stage(targets)
    for column, (block, probs) in enumerate(zip(layout.blocks, layout.split(oof["probs"]))):
        if len(layout.blocks) > 1:
            head = heads[block.name]
            lines.append(f"\nhead {block.name!r}: macro-F1 {head['oof_macro_f1']:.4f}  "
                         f"accuracy {head['oof_accuracy']:.4f}")
        lines.append("\n" + report_text(targets[scored, column], probs[scored].argmax(1), block.classes))
    return lines


def evaluation_lines(report: Report) -> list[str]:
    """`hierclf evaluate`'s summary: each pipeline's and control's scores, cost and calibration,
    the verdicts, the section of the run's kind of hierarchy, the most confused pairs."""
    lines = [f"{report.rows} rows, out-of-fold (one fold model per row; predict votes all K)"]
    for name, result, chosen in report.score_rows():
        runs = f"  ({', '.join(result['runs'])})" if "runs" in result else ""
        note = runs or ("  ← recipe's combiner" if chosen else "")
        budget = budget_text(report.budget(result))
        budget = f"  training {budget}" if budget else ""
        lines.append(f"  {name:<10} macro-F1 {result['macro_f1']:.4f}  accuracy {result['accuracy']:.4f}  "
                     f"ECE {result['ece']:.4f}{budget}  inference {result['inference']['passes']:.1f} passes/image"
                     f"{note}")
    lines += [f"  {line}" for line in report.verdict]
    lines += [f"  {line}" for line in report.section.text_lines()]
    lines.append("most confused:")
    for pair in report.pipelines[report.chosen]["most_confused"]:
        lines.append(f"  {pair['true']} → {pair['predicted']}: {pair['count']} ({pair['share_of_errors']:.0%} of "
                     f"errors)")
    return lines


def suggestion_lines(run_path: Path, max_groups: int, min_confusion: float) -> list[str]:
    """`suggest-groups`: groups of confusable classes from a flat run's out-of-fold confusion, what a
    perfect specialist could win in each, and the recipe lines that build the hierarchy over it."""
    run = Run.open(run_path)
    hierarchy = run.hierarchy
    if not hierarchy.is_flat:
        raise RunError(f"{run_path} has {hierarchy.describe()}; suggest-groups reads a flat run's out-of-fold "
                       f"confusion")
    oof = load_oof(run)
    matrix = confusion(oof.labels, oof.coarse_probs.argmax(1), hierarchy.num_classes)
    errors, rows = int(matrix.sum() - matrix.trace()), int(matrix.sum())
    lines = [f"{errors} out-of-fold errors in {rows} rows"] + _attributes_lines(hierarchy.class_names)
    found = suggestion(matrix, max_groups=max_groups, min_confusion=min_confusion)
    groups = found.groups
    if found.every_class_merged:
        lines.append(f"at {option('min_confusion')} {min_confusion:g} every class is confused with the others, and a group "
                     f"of them all is the flat problem again; the groups below are the next cut of the same tree"
                     f"{' (none holds two classes)' if not groups else ''}")
    if not groups:
        return lines + ([] if found.every_class_merged else [
            f"no two classes are confused with each other at a rate of {min_confusion:.0%} or more; a flat "
            f"model is the right shape here (or lower {option('min_confusion')})"])
    for number, group in enumerate(groups, start=1):
        names = ", ".join(hierarchy.class_names[m] for m in group.members)
        inside = round(group.error_share * errors)
        lines.append(f"  group {number}: {names}  holds {group.error_share:.0%} of the errors ({inside}; mutual "
                     f"confusion {group.confusion_rate:.1%}): a perfect specialist could win at most "
                     f"{inside / max(rows, 1) * 100:.2f} points of accuracy")
    listed = [[hierarchy.class_names[m] for m in group.members] for group in groups]
    lines.append("\nErrors between a group and the rest stay with the flat model. Paste into this run's recipe, "
                 "so the flat run is the coarse stage and only specialists train:\n\n[hierarchy]\ngroups = "
                 + show_value(listed) + f"\ncoarse_run = {show_value(str(run_path))}\n\n[fine]\ninit_from_coarse = true")
    return lines


def _attributes_lines(class_names: Sequence[str]) -> list[str]:
    """Where the classes are every combination of a few attributes' values (male/<30), that one
    head per attribute fits them."""
    values = attribute_values(class_names)
    if values is None:
        return []
    shown = " × ".join("{" + ", ".join(column) + "}" for column in values)
    return [f"these {len(class_names)} classes are every combination of {len(values)} attributes ({shown}): one "
            f"head per attribute fits such labels better than groups ([hierarchy] heads, docs/attributes.md)"]
