"""tune-fine: settings tried on one fold within a budget, the best chosen by the pipeline's score."""
from __future__ import annotations

import json

import pytest

from conftest import cli


@pytest.fixture()
def linked_run(detail_runs, tmp_path):
    """A hierarchy over the 12 px flat run (nothing trained but what a test trains): its patch
    group's two classes differ only in a detail that vanishes at 12 px."""
    result = cli("-q", "fit-coarse", detail_runs / "linked.toml", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def _specialist_folder(run):
    from hierclf.run.folder import Run

    opened = Run.open(run)
    return opened.stage_dir(opened.specialist_stages["patch"].name)


def test_the_setting_that_sees_the_detail_wins_and_is_written_with_its_fold(linked_run):
    result = cli("tune-fine", linked_run, "--group", "patch", "--try", "img_size=12,48", "--try", "epochs=3",
                 "--budget", "5", "--write")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.startswith("img_size=")}
    # setting: img_size, epochs, megapixels, seconds, within-group accuracy, macro-F1
    small, large = rows["img_size=12"], rows["img_size=48"]
    assert float(large[4]) >= 0.8 and float(large[4]) > float(small[4]) + 0.2, result.output
    assert float(large[5]) > float(small[5]), result.output
    assert "best: img_size=48 epochs=3; written into" in result.output
    recipe = (linked_run / "recipe.toml").read_text()
    assert "img_size = 48" in recipe.split("[fine.patch]")[1] and "epochs = 3" in recipe.split("[fine.patch]")[1]
    folder = _specialist_folder(linked_run)
    assert (folder / "fold-0" / "result.json").is_file()
    assert not (linked_run / "tuning" / "patch" / "img_size_48_epochs_3" / "fold-0").exists()
    # fit-fine keeps the tuned fold and trains the other two
    result = cli("fit-fine", linked_run)
    assert result.exit_code == 0, result.output
    assert "fold 0 is already trained; keeping it" in result.output
    assert json.loads((folder / "summary.json").read_text())["oof_accuracy"] > 0.8


def test_a_second_call_keeps_what_is_trained_and_the_budget_stops_what_takes_too_long(linked_run):
    result = cli("tune-fine", linked_run, "--group", "patch", "--try", "img_size=12", "--try", "epochs=2",
                 "--budget", "5")
    assert result.exit_code == 0, result.output
    assert "(the coarse stage alone)" in result.output
    assert "--write" in result.output and "recipe.toml" not in result.output  # nothing written without --write
    assert "[fine.patch]" not in (linked_run / "recipe.toml").read_text()
    tried = linked_run / "tuning" / "patch" / "img_size_12_epochs_2" / "fold-0" / "result.json"
    written = tried.stat().st_mtime_ns
    # 15 epochs on half the coarse stage's rows take far more than a tenth of its 15 epochs' seconds
    args = ("tune-fine", linked_run, "--group", "patch", "--try", "img_size=12", "--try", "epochs=2,15")
    result = cli(*args, "--budget", "0.1")
    assert result.exit_code == 0, result.output
    assert tried.stat().st_mtime_ns == written
    stopped = [line for line in result.output.splitlines() if "over budget: stopped after epoch" in line]
    assert [line.split()[:2] for line in stopped] == [["img_size=12", "epochs=15"]], result.output
    folder = linked_run / "tuning" / "patch" / "img_size_12_epochs_15" / "fold-0"
    assert (folder / "resume.safetensors").is_file() and not (folder / "result.json").exists()
    done = len((folder / "metrics.jsonl").read_text().splitlines())
    assert 1 <= done < 15
    assert cli(*args, "--budget", "0.1").exit_code == 0  # the same budget trains it no further
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == done
    result = cli(*args, "--budget", "100")  # a larger one goes on from where it stopped
    assert result.exit_code == 0 and f"resuming after epoch {done} of 15" in result.output, result.output
    assert (folder / "result.json").is_file() and "over budget" not in result.output


@pytest.mark.parametrize("tries, message", [
    (["img_size"], "expected KEY=V1,V2"),
    (["coarse.lr=1e-3"], "expected KEY=V1,V2"),
    (["nonsense=1"], "nonsense"),
    (["epochs=1", "epochs=2"], "give all its values in one --try"),
    (["epochs=1,2,3,4,5", "lr=1e-3,2e-3,3e-3,4e-3,5e-3"], "at most 24"),
])
def test_bad_settings_are_refused_before_anything_trains(linked_run, tries, message):
    result = cli("tune-fine", linked_run, "--group", "patch", *[arg for text in tries for arg in ("--try", text)])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (linked_run / "tuning").exists()


def test_a_flat_run_or_an_unknown_group_is_refused(detail_runs, linked_run):
    result = cli("tune-fine", detail_runs / "flat", "--group", "patch", "--try", "epochs=1")
    assert result.exit_code == 2 and "no specialist to tune" in result.output
    result = cli("tune-fine", linked_run, "--group", "shoes", "--try", "epochs=1")
    assert result.exit_code == 2 and "shoes" in result.output, result.output
