"""The lines the command line prints: a stage's out-of-fold summary after training, and a run's
evaluation, both rendered from what was computed (summary.json and oof.npz, a `Report`)."""
from __future__ import annotations

from typing import Any

from hierclf.hierarchy.layout import OutputLayout
from hierclf.hierarchy.stage import in_stage
from hierclf.metrics import report_text
from hierclf.report.report import Report
from hierclf.run.files import read_npz
from hierclf.run.folder import Run


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
        lines.append(f"  fold {row['fold']}: macro-F1 {row['val_macro_f1']:.4f}  accuracy {row['val_accuracy']:.4f}"
                     f"  (best epoch {row['best_epoch']} of {row['epochs_run']})")
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
    base = report.flat_images
    for name, result, chosen in report.score_rows():
        runs = f"  ({', '.join(result['runs'])})" if "runs" in result else ""
        note = runs or ("  ← recipe's combiner" if chosen else "")
        budget = f"  training ×{result['training']['images'] / base:.2f}" if base else ""
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
