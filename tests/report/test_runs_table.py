"""`hierclf runs`: one row per run folder found, with the figures evaluate and predict give."""
import csv
import io
import os
import shutil

import pytest

from conftest import cli
from hierclf.report.evaluate import score_run
from hierclf.report.runs_table import COLUMNS, run_rows, table_csv, table_html
from hierclf.run.folder import Run
from hierclf.run.scored import read_scores, record_score


def test_every_run_under_a_folder_is_a_row_with_evaluates_figures(detail_runs):
    rows, damaged = run_rows([detail_runs])
    assert damaged == []
    by_name = {row.run.rsplit("/", 1)[-1]: row for row in rows}
    assert set(by_name) == {"flat", "flat-seed1", "hier", "linked"}  # data/ and the recipes are passed over
    assert [row.oof_macro_f1 for row in rows] == sorted((row.oof_macro_f1 for row in rows), reverse=True)
    for name in ("hier", "linked"):
        report = score_run(Run.open(detail_runs / name))
        row = by_name[name]
        assert row.combiner == report.chosen and row.oof_macro_f1 == report.pipelines[report.chosen]["macro_f1"]
        best = max(report.pipelines, key=lambda pipeline: report.pipelines[pipeline]["macro_f1"])
        assert row.best_macro_f1 == report.pipelines[best]["macro_f1"]
        assert row.images == report.pipelines[report.chosen]["training"]["images"]
    assert by_name["flat"].kind == "flat" and by_name["hier"].kind == "groups"
    assert by_name["linked"].kind == "groups over a flat run"
    assert by_name["hier"].sizes == "12 → 48" and by_name["hier"].epochs == "10 + 8"
    for name, row in by_name.items():  # the last score predict recorded, if any (other tests predict too)
        recorded = read_scores(detail_runs / name)
        assert row.test_macro_f1 == (recorded[-1]["macro_f1"] if recorded else None)
    cheapest = run_rows([detail_runs], sort="images")[0]
    assert [row.images for row in cheapest] == sorted((row.images for row in cheapest), reverse=True)


def test_a_damaged_run_is_named_and_the_others_listed(detail_runs, tmp_path):
    shutil.copytree(detail_runs / "flat", tmp_path / "runs" / "good")
    shutil.copytree(detail_runs / "flat", tmp_path / "runs" / "broken")
    (tmp_path / "runs" / "broken" / "hierarchy.json").write_text("{not json")
    shutil.copytree(detail_runs / "flat", tmp_path / "runs" / "torn")
    (tmp_path / "runs" / "torn" / "coarse" / "oof.npz").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "runs" / "notes").mkdir()
    (tmp_path / "runs" / "notes" / "ideas.txt").write_text("try 128 px")
    rows, damaged = run_rows([tmp_path / "runs"])
    assert [row.run for row in rows] == [str(tmp_path / "runs" / "good")] and rows[0].kind == "flat"
    (tmp_path / "runs" / "good" / "probe.json").write_text("{}")  # what marks `hierclf probe`'s runs
    assert run_rows([tmp_path / "runs" / "good"])[0][0].kind == "linear probe"
    assert len(damaged) == 2 and all(line.count("\n") == 0 for line in damaged)
    assert damaged[0].startswith(f"skipped {tmp_path / 'runs' / 'broken'}: ")
    assert damaged[1].startswith(f"skipped {tmp_path / 'runs' / 'torn'}: ")
    result = cli("runs", tmp_path / "runs", "--sort", "speed")
    assert result.exit_code == 2 and "--sort 'speed': no such column; columns are run, kind" in result.stderr


def test_a_scored_prediction_shows_as_the_runs_test_score(detail_runs, tmp_path):
    shutil.copytree(detail_runs / "flat", tmp_path / "runs" / "flat")
    result = cli("predict", tmp_path / "runs" / "flat", detail_runs / "data" / "train.csv", "--out",
                 tmp_path / "p.csv", "--workers", "0")
    assert result.exit_code == 0, result.output
    printed = float(result.stdout.split("macro-F1 ")[1].split()[0])
    [entry] = read_scores(tmp_path / "runs" / "flat")
    assert entry["macro_f1"] == pytest.approx(printed, abs=5e-5) and entry["combiner"] == "flat"
    assert entry["input"] == str(detail_runs / "data" / "train.csv") and entry["engine"].startswith("torch")
    [row], _ = run_rows([tmp_path / "runs"])
    assert row.test_macro_f1 == entry["macro_f1"] and row.test_input == entry["input"]
    with (tmp_path / "runs" / "flat" / "scored.jsonl").open("a") as handle:
        handle.write('{"macro_f1": 0.5, "input": "cut sho')  # a line a killed process left
    assert len(read_scores(tmp_path / "runs" / "flat")) == 1
    assert "cannot be written to" in record_score(tmp_path / "p.csv", {"macro_f1": 1.0})  # no folder: no error


def test_the_table_as_csv_and_as_one_page_linking_each_report(detail_runs, tmp_path):
    assert cli("-q", "evaluate", detail_runs / "hier").exit_code == 0
    (tmp_path / "a-file").write_text("")
    result = cli("runs", detail_runs, "--csv", tmp_path / "runs.csv", "--html", tmp_path / "a-file" / "runs.html")
    assert result.exit_code == 2 and "--html" in result.stderr and not (tmp_path / "runs.csv").exists()
    result = cli("runs", detail_runs, "--csv", tmp_path / "runs.csv", "--html", tmp_path / "out" / "runs.html")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split()[:3] == ["run", "kind", "model"]
    rows, _ = run_rows([detail_runs])
    read = list(csv.DictReader(io.StringIO((tmp_path / "runs.csv").read_text())))
    assert list(read[0]) == list(COLUMNS) and [line["run"] for line in read] == [row.run for row in rows]
    assert table_csv(rows) == (tmp_path / "runs.csv").read_text()
    page = (tmp_path / "out" / "runs.html").read_text()
    assert page == table_html(rows, tmp_path / "out" / "runs.html")
    link = os.path.relpath(detail_runs / "hier" / "report.html", tmp_path / "out")
    assert f'<a href="{link}">{detail_runs / "hier"}</a>' in page  # the page can move with the runs
    assert page.count("<tr>") == len(rows) + 1 and "<script" not in page and "http" not in page


def test_the_tables_files_never_replace_a_runs_own_files_an_input_or_a_users_file(detail_runs, tmp_path):
    run = tmp_path / "runs" / "flat"
    shutil.copytree(detail_runs / "flat", run)
    recipe, train_csv = (run / "recipe.toml").read_text(), detail_runs / "data" / "train.csv"
    labels = train_csv.read_text()
    (tmp_path / "notes.csv").write_text("mine\n")
    (tmp_path / "target.csv").write_text("linked\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "target.csv")
    refused = [(("--csv", run / "recipe.toml"), "inside the run folder"),
               (("--html", run / "report.html"), "inside the run folder"),
               (("--csv", tmp_path / "runs"), "that is a folder"),
               (("--csv", train_csv), "not a table hierclf runs wrote"),
               (("--csv", tmp_path / "notes.csv"), "--overwrite"),
               (("--csv", tmp_path / "link.csv"), "symbolic link"),
               (("--csv", tmp_path / "same", "--html", tmp_path / "same"), "--csv and --html both name")]
    for options, message in refused:
        result = cli("runs", tmp_path / "runs", *options)
        assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.output
    assert (run / "recipe.toml").read_text() == recipe and not (run / "report.html").exists()
    assert train_csv.read_text() == labels and (tmp_path / "notes.csv").read_text() == "mine\n"
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "target.csv").read_text() == "linked\n"
    assert not (tmp_path / "same").exists()
    # a table it wrote is replaced as it is; another file only when asked
    for _ in range(2):
        result = cli("runs", tmp_path / "runs", "--csv", tmp_path / "t.csv", "--html", tmp_path / "t.html")
        assert result.exit_code == 0, result.output
    assert cli("runs", tmp_path / "runs", "--csv", tmp_path / "notes.csv", "--overwrite").exit_code == 0
    assert (tmp_path / "notes.csv").read_text().startswith(",".join(COLUMNS))


def test_a_run_folder_named_like_a_url_links_as_a_relative_path(detail_runs, tmp_path):
    """A folder named `javascript:alert(1)` (a legal name) links as ./javascript%3Aalert%281%29/…:
    no href can carry a scheme, and the name shows escaped."""
    run = tmp_path / "runs" / "javascript:alert(1)"
    shutil.copytree(detail_runs / "hier", run)
    (run / "report.html").write_text("<p>report</p>")
    page_path = tmp_path / "runs" / "table.html"
    assert cli("runs", tmp_path / "runs", "--html", page_path).exit_code == 0
    page = page_path.read_text()
    assert 'href="./javascript%3Aalert%281%29/report.html"' in page
    assert 'href="javascript' not in page.replace("./javascript", "")


def test_predict_records_its_score_only_in_a_regular_file_of_the_run(detail_runs, tmp_path):
    """scored.jsonl a FIFO (no reader: the append would wait for good), or a link out of the run:
    predict writes its CSV, says in one line the score is not recorded, and leaves both alone."""
    import signal

    run = tmp_path / "runs" / "flat"
    shutil.copytree(detail_runs / "flat", run)
    (run / "scored.jsonl").unlink(missing_ok=True)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text("mine\n")
    cases = [(lambda path: os.mkfifo(path), "is a FIFO, not a regular file"),
             (lambda path: path.symlink_to(outside), "is a symbolic link, not a file of the run")]
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("predict waited on scored.jsonl"))
    for make, said in cases:
        make(run / "scored.jsonl")
        signal.alarm(120)
        result = cli("predict", run, detail_runs / "data" / "train.csv", "--out", tmp_path / "p.csv", "--workers", "0")
        signal.alarm(0)
        assert result.exit_code == 0 and (tmp_path / "p.csv").is_file(), result.output
        assert f"(the score is not recorded: {run / 'scored.jsonl'} {said}" in result.stdout
        (run / "scored.jsonl").unlink()
        (tmp_path / "p.csv").unlink()
    assert outside.read_text() == "mine\n"


def test_one_damaged_record_is_named_and_the_other_runs_listed(detail_runs, tmp_path):
    """hierarchy.json or a scored.jsonl line nested 100,000 deep, a scored.jsonl over its size
    limit, and scores that are no shares (NaN, 1e999, -5, true)."""
    from hierclf.run.scored import LIMIT

    for name in ("good", "deep-hierarchy", "huge-record", "odd-scores"):
        shutil.copytree(detail_runs / "flat", tmp_path / "runs" / name)
        (tmp_path / "runs" / name / "scored.jsonl").unlink(missing_ok=True)
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "runs" / "deep-hierarchy" / "hierarchy.json").write_text(deep)
    with (tmp_path / "runs" / "huge-record" / "scored.jsonl").open("wb") as handle:
        handle.truncate(LIMIT + 1)  # sparse: nothing written, yet larger than a record may be
    lines = [deep, *(f'{{"macro_f1": {value}, "input": "x"}}' for value in ("NaN", "1e999", "-5", "true")),
             '{"macro_f1": 0.75, "accuracy": 0.8, "input": "test.csv"}']
    (tmp_path / "runs" / "odd-scores" / "scored.jsonl").write_text("\n".join(lines) + "\n")
    rows, damaged = run_rows([tmp_path / "runs"])
    assert sorted(row.run.rsplit("/", 1)[-1] for row in rows) == ["good", "odd-scores"]
    assert len(damaged) == 2 and all(line.count("\n") == 0 for line in damaged)
    assert any("deep-hierarchy" in line and "nested too deep" in line for line in damaged)
    assert any("huge-record" in line and "more than the 64 MB" in line for line in damaged)
    odd = next(row for row in rows if row.run.endswith("odd-scores"))
    assert odd.test_macro_f1 == 0.75 and odd.test_input == "test.csv"
    result = cli("runs", tmp_path / "runs")
    assert result.exit_code == 0 and result.stderr.count("skipped") == 2 and "good" in result.stdout
