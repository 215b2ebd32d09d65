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
    assert not record_score(tmp_path / "p.csv", {"macro_f1": 1.0})  # no folder there: not recorded, no error


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
