"""`hierclf runs`: the table of runs (`hierclf.report.runs_table`) on the terminal, and as CSV
or one HTML page."""
from __future__ import annotations

import os
from pathlib import Path

import click


@click.command()
@click.argument("paths", metavar="DIR...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--sort", default="oof_macro_f1", show_default=True, metavar="COLUMN",
              help="The column to sort by (scores, costs and dates from the highest): any of --csv's columns.")
@click.option("--csv", "csv_out", type=click.Path(path_type=Path), default=None, help="Also write the table as CSV.")
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None,
              help="Also write it as one self-contained page, each run linking to its report.html.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --csv or --html file that is not a table "
                                                "hierclf runs wrote (one it wrote is replaced anyway).")
def runs(paths: tuple[Path, ...], sort: str, csv_out: Path | None, html_out: Path | None, overwrite: bool) -> None:
    """One table of every run folder under DIR...: kind, model, sizes, epochs, out-of-fold
    macro-F1 (the recipe's pipeline and the best), training cost, the last test score, date."""
    from hierclf.report.runs_table import run_rows, table_csv, table_html, table_text

    check_outputs(paths, {"--csv": csv_out, "--html": html_out}, overwrite)
    rows, damaged = run_rows(paths, sort)
    for line in damaged:
        click.echo(line, err=True)
    click.echo(table_text(rows) if rows else f"no run folders under {', '.join(map(str, paths))}")
    from hierclf.run.files import write_text

    for path, text in ((csv_out, csv_out and table_csv(rows)), (html_out, html_out and table_html(rows, html_out))):
        if path is not None:
            write_text(path, text)
            click.echo(f"wrote {path}")


def check_outputs(paths: tuple[Path, ...], outputs: dict[str, Path | None], overwrite: bool) -> None:
    """The table's files refused before any work, as predict's --out is: one of the folders it
    reads or a file inside a run folder (a run's recipe.toml, its report.html), a symbolic link
    (writing would replace the link, not its target), both options on one file, or an existing
    file it did not write (a user's CSV) unless `overwrite`."""
    from hierclf.errors import RunError
    from hierclf.report.runs_table import written_by_runs
    from hierclf.run.destinations import check_output

    given = {option: path for option, path in outputs.items() if path is not None}
    for option, path in given.items():
        if path.is_symlink():
            raise RunError(f"{option} {path}: that is a symbolic link (to {os.readlink(path)}); give the file itself")
        check_output(path, option, reads=paths)
        if path.exists() and not overwrite and not written_by_runs(path):
            raise RunError(f"{option} {path}: that file exists and is not a table hierclf runs wrote; give a new "
                           f"path, or add --overwrite to replace it")
    if len(given) == 2 and given["--csv"].resolve() == given["--html"].resolve():
        raise RunError(f"--csv and --html both name {given['--csv']}; give each its own file")
