"""report.md and oof-predictions.csv, rendered from a `Report`."""
from __future__ import annotations

import csv
import io

from hierclf.hierarchy.sections import markdown_text
from hierclf.report.report import Report, budget_cell


def report_markdown(report: Report) -> str:
    """report.md: the scores side by side, the calibration, the section of the run's kind of
    hierarchy, the per-class table and the most-confused pairs."""
    lines = [f"# Out-of-fold evaluation of {markdown_text(report.run)}", "",
             f"{report.rows} rows, each predicted by models that never trained on it.", ""]
    lines += report.section.markdown_intro()
    lines += _score_table(report)
    lines += ["", "ECE: expected calibration error (15 bins of top probability); NLL: mean negative "
                  "log-likelihood of the true class. Both out-of-fold; lower is better.", "", report.oof_estimates]
    for control in report.controls:
        if "ensemble_gain" in control:
            members = ", ".join(f"{f1:.4f}" for f1 in control["members_macro_f1"])
            lines.append(f"The {len(control['runs'])}-run ensemble scores {control['ensemble_gain'] * 100:+.2f} "
                         f"points over its members' mean ({members}).")
    lines += [""] + [f"- {line}" for line in report.verdict]
    lines += _calibration_table(report)
    lines += report.section.markdown_lines()
    lines += _per_class(report)
    chosen = report.pipelines[report.chosen]
    lines += ["", f"## Most confused ({report.chosen})", ""]
    lines += [f"- {markdown_text(p['true'])} taken for {markdown_text(p['predicted'])}: {p['count']} "
              f"({p['share_of_errors']:.0%} of errors)"
              for p in chosen["most_confused"]] or ["- no errors"]
    return "\n".join(lines) + "\n"


def _score_table(report: Report) -> list[str]:
    lines = ["| pipeline | macro-F1 | accuracy | ECE | NLL | training images | training s | images, megapixels, "
             "seconds × flat | inference passes per image | megapixels |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, result, chosen in report.score_rows():
        label = f"{name} ({', '.join(map(markdown_text, result['runs']))})" if "runs" in result else name
        training, inference = result["training"], result["inference"]
        ratio = budget_cell(report.budget(result))
        lines.append(f"| {label}{' (chosen)' if chosen else ''} | {result['macro_f1']:.4f} | {result['accuracy']:.4f} "
                     f"| {result['ece']:.4f} | {result['nll']:.4f} | {training['images']:,.0f} "
                     f"| {training['seconds']:.0f} | {ratio} | {inference['passes']:.2f} | {inference['megapixels']:.4f} |")
    return lines


def _calibration_table(report: Report) -> list[str]:
    if not report.calibration:
        return []
    lines = ["", "Temperature scaling (combine.calibrate), fit on each stage's out-of-fold outputs:", "",
             "| stage | output | temperature | NLL before | NLL after | ECE before | ECE after |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for stage, blocks in report.calibration.items():
        for block, entry in blocks.items():
            lines.append(f"| {markdown_text(stage)} | {markdown_text(block)} | {entry['temperature']:.3f} | {entry['before']['nll']:.4f} | "
                         f"{entry['after']['nll']:.4f} | {entry['before']['ece']:.4f} | {entry['after']['ece']:.4f} |")
    return lines


def _per_class(report: Report) -> list[str]:
    chosen = report.pipelines[report.chosen]
    flat_classes = (report.flat or {}).get("per_class")
    lines = ["", f"## Per class ({report.chosen})", "",
             "| class | precision | recall | F1 | support |" + (" flat F1 |" if flat_classes else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if flat_classes else "")]
    for name, row in chosen["per_class"].items():
        line = (f"| {markdown_text(name)} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1-score']:.4f} | "
                f"{int(row['support'])} |")
        lines.append(line + (f" {flat_classes[name]['f1-score']:.4f} |" if flat_classes else ""))
    return lines


def predictions_csv(report: Report) -> str:
    """oof-predictions.csv: one row per image, its label, its fold, and what each pipeline said,
    for error analysis."""
    names = report.classes
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "label", "fold", *report.outcomes])
    for row, image_id in enumerate(report.ids):
        writer.writerow([image_id, names[report.labels[row]], int(report.folds[row]),
                         *(names[outcome.labels[row]] for outcome in report.outcomes.values())])
    return buffer.getvalue()
