"""One table of many runs (`hierclf runs`): what each is, what it scored out-of-fold and on
labelled test images, and what it cost to train, so a dozen runs compare at a glance.

Run folders are found under the paths given (a run folder is not searched further); a folder
that is not a run is passed over in silence, and a damaged run is named in one line and left out.
The out-of-fold figures are computed from the run's files as `evaluate` computes them, so a run
never evaluated has them too."""
from __future__ import annotations

import csv
import dataclasses
import html
import io
import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from hierclf.combine.registry import COMBINERS
from hierclf.errors import HierclfError, option
from hierclf.metrics import scores
from hierclf.report.costs import training_cost
from hierclf.report.evaluate import pipeline_outcomes
from hierclf.run.folder import Run
from hierclf.run.outputs import load_oof
from hierclf.run.scored import read_scores


@dataclass(frozen=True)
class RunRow:
    """One run: what it is, its scores (None where not known: a run not finished, a run never
    scored on test images) and its training cost."""

    run: str
    kind: str
    model: str
    sizes: str
    epochs: str
    oof_macro_f1: float | None
    combiner: str
    best_macro_f1: float | None
    best_combiner: str
    images: float | None
    megapixels: float | None
    seconds: float | None
    test_macro_f1: float | None
    test_input: str
    date: str

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


COLUMNS = tuple(field.name for field in dataclasses.fields(RunRow))
"""Every column, in the table's order; any can sort it."""
FIGURES = ("oof_macro_f1", "best_macro_f1", "images", "megapixels", "seconds", "test_macro_f1", "date")
"""The columns sorted from the highest (the newest date first)."""


def run_rows(paths: Sequence[str | Path], sort: str = "oof_macro_f1") -> tuple[list[RunRow], list[str]]:
    """The table of runs, for a notebook as for `hierclf runs`.

    Args:
        paths: folders to search; each run folder found is one row (a run folder is not searched
            further, a folder that is no run is passed over).
        sort: the column to sort by (COLUMNS): scores, costs and dates from the highest, text
            in order, unknown figures last.

    Returns:
        The rows, and one line per damaged run left out (naming it and what is wrong)."""
    if sort not in COLUMNS:
        raise HierclfError(f"{option('sort')} {sort!r}: no such column; columns are {', '.join(COLUMNS)}")
    rows, damaged = [], []
    for root in paths:
        if not Path(root).is_dir():
            raise HierclfError(f"{root}: no such folder")
        for folder in _run_folders(Path(root)):
            try:
                rows.append(run_row(Run.open(folder), folder))
            except (HierclfError, OSError, ValueError) as error:
                damaged.append(f"skipped {folder}: {str(error).splitlines()[0]}")
    known = [row for row in rows if getattr(row, sort) is not None]
    known.sort(key=lambda row: getattr(row, sort), reverse=sort in FIGURES)
    return known + [row for row in rows if getattr(row, sort) is None], damaged


def _run_folders(root: Path) -> Iterator[Path]:
    """`root` itself when it holds a recipe.toml, else every such folder below it (hidden folders
    and links left out), in name order."""
    if (root / "recipe.toml").is_file():
        yield root
        return
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and not entry.name.startswith("."):
            yield from _run_folders(entry)


def run_row(run: Run, shown_as: Path | None = None) -> RunRow:
    """The row of one opened run."""
    recipe, hierarchy = run.recipe, run.hierarchy
    coarse, specialists = run.coarse_stage.config, [stage.config for stage in run.specialist_stages.values()]
    kind = ("linear probe" if (run.root / "probe.json").is_file() else "flat") if hierarchy.is_flat else (
        "groups over a flat run" if recipe.hierarchy.coarse_run else f"{hierarchy.part_noun}s")
    method = run.combiner()
    pipelines = _oof_scores(run)
    best = max(pipelines, key=pipelines.get) if pipelines else ""
    cost = training_cost(run, COMBINERS[method].uses_specialists) if pipelines else {}  # the recipe's pipeline's
    tested = read_scores(run.root)
    return RunRow(
        run=str(shown_as or run.root), kind=kind,
        model=" + ".join(dict.fromkeys([coarse.model, *(config.model for config in specialists)])),
        sizes=" → ".join(str(size) for size in dict.fromkeys([coarse.img_size, *(c.img_size for c in specialists)])),
        epochs=" + ".join(str(epochs) for epochs in [coarse.epochs, *dict.fromkeys(c.epochs for c in specialists)]),
        oof_macro_f1=pipelines.get(method), combiner=method, best_macro_f1=pipelines.get(best), best_combiner=best,
        images=cost.get("images"), megapixels=cost.get("megapixels") or None, seconds=cost.get("seconds") or None,
        test_macro_f1=float(tested[-1]["macro_f1"]) if tested else None,
        test_input=str(tested[-1].get("input", "")) if tested else "", date=_trained_on(run))


def _oof_scores(run: Run) -> dict[str, float]:
    """Out-of-fold macro-F1 of every pipeline the run allows: none for a run not finished (a
    stage without its out-of-fold file), a RunError for one whose files are damaged."""
    if not all(run.oof_path(stage.name).is_file() for stage in run.stages):
        return {}
    oof = load_oof(run)
    count = run.hierarchy.num_classes
    return {name: scores(oof.labels, outcome.labels, count)["macro_f1"]
            for name, outcome in pipeline_outcomes(run, oof).items()}


def _trained_on(run: Run) -> str:
    """When the run's last fold finished (its recipe's date, before any has)."""
    results = [path.stat().st_mtime for path in run.root.glob("**/fold-*/result.json")]
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(max(results, default=run.recipe_path.stat().st_mtime)))


def cell(value: object) -> str:
    """A figure as the table shows it: scores to 4 places, costs whole, unknown as –."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if value <= 1 else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return str(value)


HEADERS = {"run": "run", "kind": "kind", "model": "model", "sizes": "px", "epochs": "epochs",
           "oof_macro_f1": "OOF F1", "combiner": "by", "best_macro_f1": "best OOF", "best_combiner": "best by",
           "images": "images", "megapixels": "MP", "seconds": "s", "test_macro_f1": "test F1",
           "test_input": "test on", "date": "date"}


def table_text(rows: Sequence[RunRow]) -> str:
    """The rows as a plain-text table, columns aligned."""
    grid = [list(HEADERS.values())] + [[cell(getattr(row, name)) for name in HEADERS] for row in rows]
    widths = [max(len(line[column]) for line in grid) for column in range(len(HEADERS))]
    return "\n".join("  ".join(value.ljust(width) for value, width in zip(line, widths)).rstrip() for line in grid)


def table_csv(rows: Sequence[RunRow]) -> str:
    """The rows as CSV, every column by its name, figures unrounded."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(row.to_dict() for row in rows)
    return buffer.getvalue()


def table_html(rows: Sequence[RunRow], page: Path) -> str:
    """One self-contained page of the table, each run's name linking to its report.html (where
    evaluate wrote one), relative to where `page` is written."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in HEADERS.values())
    body = []
    for row in rows:
        cells = [html.escape(cell(getattr(row, name))) for name in HEADERS]
        report = Path(row.run) / "report.html"
        if report.is_file():
            cells[0] = f'<a href="{html.escape(relative_link(report, page), quote=True)}">{cells[0]}</a>'
        body.append("<tr>" + "".join(f"<td>{value}</td>" for value in cells) + "</tr>")
    return (f"<!doctype html>{PAGE_MARK}<html><head><meta charset='utf-8'><title>hierclf runs</title>"
            f"<style>{STYLE}</style>"
            f"</head><body><h1>hierclf runs</h1><p>{len(rows)} runs; out-of-fold macro-F1 of the recipe's pipeline "
            f"and of the best one, training cost (images, megapixels, seconds), the last test score predict "
            f"recorded.</p><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            f"</body></html>\n")


STYLE = ("body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse;font-size:14px}"
         "td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left;white-space:nowrap}"
         "th{background:#f4f4f4}tr:hover td{background:#fafafa}")


def relative_link(target: Path, page: Path) -> str:
    """`target` as a link from the page's folder: a relative path that cannot be read as a URL with
    a scheme (a run folder named `javascript:…`), each part percent-encoded, and one that does not
    climb out starting with ./ ."""
    parts = Path(os.path.relpath(target.resolve(), page.resolve().parent)).parts
    link = "/".join(urllib.parse.quote(part, safe="") if part != ".." else part for part in parts)
    return link if link.startswith("../") else f"./{link}"


PAGE_MARK = "<!-- written by hierclf runs -->"
"""What every page `hierclf runs --html` writes begins with, after its doctype: a page it may
write over."""


def written_by_runs(path: Path) -> bool:
    """Whether the file at `path` is a table `hierclf runs` wrote (its CSV header on the first
    line, or its page's mark at the start): one it may replace without being asked."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            first = handle.readline(4096).rstrip("\n")
    except OSError:
        return False
    return first == ",".join(COLUMNS) or first.startswith(f"<!doctype html>{PAGE_MARK}")
