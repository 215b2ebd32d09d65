"""`hierclf runs`: the table of runs (`hierclf.report.runs_table`) on the terminal, and as CSV
or one HTML page."""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("paths", metavar="DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--sort", default="oof_macro_f1", show_default=True, metavar="COLUMN",
              help="The column to sort by (scores, costs and dates from the highest): any of --csv's columns.")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), default=None, help="Also write the table as CSV.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Also write it as one self-contained page, each run linking to its report.html.")
def runs(paths: tuple[Path, ...], sort: str, csv_out: Path | None, html_out: Path | None) -> None:
    """One table of every run folder under DIR...: kind, model, sizes, epochs, out-of-fold
    macro-F1 (the recipe's pipeline and the best), training cost, the last test score, date."""
    from hierclf.report.runs_table import run_rows, table_csv, table_html, table_text
    from hierclf.run.files import check_writable, write_text

    for path, option in ((csv_out, "--csv"), (html_out, "--html")):
        if path is not None:
            check_writable(path, option)
    rows, damaged = run_rows(paths, sort)
    for line in damaged:
        click.echo(line, err=True)
    click.echo(table_text(rows) if rows else f"no run folders under {', '.join(map(str, paths))}")
    for path, text in ((csv_out, csv_out and table_csv(rows)), (html_out, html_out and table_html(rows, html_out))):
        if path is not None:
            write_text(path, text)
            click.echo(f"wrote {path}")
