"""report.html: the evaluation as one self-contained page (every image inline, no server, no
network) that a user opens first: the scores side by side, per-class F1 of every pipeline, the
confusion matrix, the most confused pairs with thumbnails of the images taken for each other,
the reliability diagram and each stage's learning curves."""
from __future__ import annotations

import base64
import html
import io
from typing import Sequence

import numpy as np
from PIL import Image

from hierclf.data import Items, load_training_items
from hierclf.errors import HierclfError
from hierclf.hierarchy.build import label_attributes
from hierclf.figures import confusion_figure, learning_curves_figure, png_bytes, reliability_figure
from hierclf.report.report import Report, budget_cell
from hierclf.run.fold_files import read_history
from hierclf.run.folder import Run

THUMBNAIL = 64
"""Side of an error thumbnail, pixels: enough to see what was confused, small enough to embed."""

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.chosen{font-weight:bold}.thumbs img{margin:2px;border:1px solid #999}
img.figure{max-width:100%}.note{color:#666}"""


def report_html(run: Run, report: Report, probs_binned: dict[str, np.ndarray], matrix: np.ndarray) -> str:
    """The page for `report`, with the chosen pipeline's reliability bins and confusion matrix."""
    names = tuple(report.classes)
    chosen = report.chosen
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(run.root.name)}: evaluation</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Out-of-fold evaluation of <code>{_e(str(run.root))}</code></h1>",
             f"<p>{report.rows} rows, each predicted by the fold model that never trained on it. "
             f"{_e(report.oof_estimates)}</p>"]
    parts += ["<h2>Scores</h2>", _score_table(report)]
    if report.verdict:
        parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in report.verdict) + "</ul>")
    parts += ["<h2>Per class F1</h2>", _per_class_table(report, names)]
    parts += [f"<h2>Confusion ({_e(chosen)})</h2>",
              _image(png_bytes(confusion_figure(matrix, names, f"{chosen}, out-of-fold")), "confusion matrix")]
    parts += [f"<h2>Most confused ({_e(chosen)})</h2>", _confused(run, report, names)]
    parts += [f"<h2>Calibration ({_e(chosen)})</h2>",
              _image(png_bytes(reliability_figure(probs_binned, f"{chosen}: ECE "
                                                  f"{report.pipelines[chosen]['ece']:.4f}")), "reliability")]
    parts += ["<h2>Learning curves</h2>", _learning_curves(run), "</body></html>"]
    return "\n".join(parts) + "\n"


def _e(text: str) -> str:
    return html.escape(str(text))


def _image(data: bytes, alt: str, css: str = "figure") -> str:
    return f"<img class='{css}' alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"


def _score_table(report: Report) -> str:
    lines = ["<table><tr><th>pipeline</th><th>macro-F1</th><th>accuracy</th><th>ECE</th><th>NLL</th>"
             "<th>training images, megapixels, seconds × flat</th><th>training s</th><th>inference passes per image</th></tr>"]
    for name, result, is_chosen in report.score_rows():
        label = f"{name} ({', '.join(result['runs'])})" if "runs" in result else name
        ratio = budget_cell(report.budget(result))
        lines.append(f"<tr{' class=chosen' if is_chosen or name == report.chosen else ''}><td>{_e(label)}</td>"
                     f"<td>{result['macro_f1']:.4f}</td><td>{result['accuracy']:.4f}</td><td>{result['ece']:.4f}</td>"
                     f"<td>{result['nll']:.4f}</td><td>{ratio}</td><td>{result['training']['seconds']:.0f}</td>"
                     f"<td>{result['inference']['passes']:.2f}</td></tr>")
    return "\n".join(lines) + "</table>"


def _per_class_table(report: Report, names: Sequence[str]) -> str:
    columns = [(name, result["per_class"]) for name, result in report.pipelines.items()]
    if report.flat is not None:
        columns.append(("flat", report.flat["per_class"]))
    lines = ["<table><tr><th>class</th>" + "".join(f"<th>{_e(name)}</th>" for name, _ in columns) + "</tr>"]
    for name in names:
        lines.append(f"<tr><td>{_e(name)}</td>" + "".join(f"<td>{table[name]['f1-score']:.4f}</td>"
                                                            for _, table in columns) + "</tr>")
    return "\n".join(lines) + "</table>"


def _confused(run: Run, report: Report, names: Sequence[str], per_pair: int = 6) -> str:
    """Each most-confused pair with thumbnails of a few of its images, when the training images
    can still be found."""
    ids, labels, predicted = report.ids, report.labels, report.outcomes[report.chosen].labels
    pairs = report.pipelines[report.chosen]["most_confused"]
    if not pairs:
        return "<p>No errors.</p>"
    items = _training_items(run)
    index = {name: position for position, name in enumerate(names)}
    row_of = {} if items is None else {str(image_id): row for row, image_id in enumerate(items.ids)}
    out = [] if items is not None else ["<p class=note>The training images were not found where the recipe's "
                                        "[data] points, so no thumbnails.</p>"]
    for pair in pairs:
        out.append(f"<h3>{_e(pair['true'])} taken for {_e(pair['predicted'])}: {pair['count']} "
                   f"({pair['share_of_errors']:.0%} of errors)</h3>")
        if items is None:
            continue
        rows = np.flatnonzero((labels == index[pair["true"]]) & (predicted == index[pair["predicted"]]))[:per_pair]
        thumbs = [_thumbnail(items, row_of[str(ids[row])]) for row in rows if str(ids[row]) in row_of]
        out.append("<div class=thumbs>" + "".join(_image(data, str(ids[row]), "thumb")
                                                  for row, data in zip(rows, thumbs)) + "</div>")
    return "\n".join(out)


def _training_items(run: Run) -> Items | None:
    try:
        return load_training_items(run.recipe.data, label_attributes(run.recipe.hierarchy), check_files=False)
    except HierclfError:
        return None


def _thumbnail(items: Items, row: int) -> bytes:
    pixels = items.image(row, 3, max_side=2 * THUMBNAIL)
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    factor = THUMBNAIL // max(image.size)
    if factor >= 2:  # a small image (8 px digits) blown up in whole pixels, so it can be seen
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _learning_curves(run: Run) -> str:
    out = []
    for stage in run.stages:
        histories = {}
        for fold in run.finished_folds(stage.name):
            history = read_history(run.fold_dir(stage.name, fold))
            if history:
                histories[fold] = history
        if histories:
            out.append(_image(png_bytes(learning_curves_figure(histories, stage.name)), f"{stage.name} curves"))
    return "\n".join(out) or "<p class=note>No metrics.jsonl found.</p>"
