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
                 "--budget", "5", "--write", "--no-bar")
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
                 "--budget", "5", "--no-bar")
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
    (["nonsense=1"], "--try 'nonsense=1': nonsense is no key of a [fine.<group>] table"),
    (["imgsize=64"], "--try 'imgsize=64': imgsize is no key of a [fine.<group>] table (did you mean 'img_size'?)"),
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
    assert result.exit_code == 2 and "--group 'shoes': groups are patch" in result.output, result.output
    result = cli("tune-fine", linked_run, "--group", "../../x", "--try", "img_size=64")
    assert result.exit_code == 2 and "--group '../../x': groups are patch" in result.output, result.output
    assert "--set" not in result.output and "recipe.toml" not in result.output


def _bar_row(output):
    rows = [line for line in output.splitlines() if "(the bar)" in line]
    assert len(rows) == 1, output
    return rows[0]


def test_the_bar_is_the_flat_model_at_the_matched_size_and_decides_what_is_written(linked_run):
    from hierclf.tune.bar import matched_size

    args = ("tune-fine", linked_run, "--group", "patch", "--try", "img_size=48", "--try", "epochs=3", "--budget", "5")
    result = cli(*args, "--write")
    assert result.exit_code == 0, result.output
    trial = next(line for line in result.output.splitlines() if line.startswith("img_size=48"))
    share = float(trial.split()[2].rstrip("×"))  # the specialist's megapixels / the flat fold's
    size = int(_bar_row(result.output).split()[2])
    assert abs(size - matched_size(12, share)) <= 1 and size > 12, result.output
    bar_megapixels = float(_bar_row(result.output).split()[6].rstrip("×"))
    assert bar_megapixels <= 1 + share + 0.02, result.output  # never more pixels than the pipeline
    bar_fold = linked_run / "tuning" / f"flat-{size}px" / "fold-0" / "result.json"
    assert bar_fold.is_file()
    written = "[fine.patch]" in (linked_run / "recipe.toml").read_text()
    if f"it beats the flat model at {size} px" in result.output:
        assert written and "Written into" in result.output, result.output
    else:
        assert f"the flat model at {size} px scores as well" in result.output and "Nothing written" in result.output
        assert not written
    before = bar_fold.stat().st_mtime_ns
    assert cli(*args).exit_code == 0
    assert bar_fold.stat().st_mtime_ns == before  # a second call keeps the trained bar


def test_a_specialist_level_with_the_bar_is_not_written(linked_run, monkeypatch):
    import hierclf.tune.specialist as specialist
    from hierclf.tune.bar import Bar

    level = Bar(img_size=22, megapixels=3.4, seconds=3.0, macro_f1=0.9,
                difference={"difference": 0.004, "low": -0.02, "high": 0.03})
    monkeypatch.setattr(specialist, "flat_bar", lambda *args: level)
    tuning = specialist.tune_specialist(linked_run, "patch", ["img_size=48", "epochs=2"], specialist.Search(budget=5),
                                         write=True)
    assert not tuning.written and "[fine.patch]" not in (linked_run / "recipe.toml").read_text()
    verdict = tuning.lines()[-1]
    assert "the flat model at 22 px scores as well" in verdict and "better pipeline here" in verdict
    assert "--set coarse.img_size=22" in verdict and "Nothing written" in verdict
    cleared = Bar(22, 3.4, 3.0, 0.9, {"difference": 0.05, "low": 0.01, "high": 0.09})
    monkeypatch.setattr(specialist, "flat_bar", lambda *args: cleared)
    tuning = specialist.tune_specialist(linked_run, "patch", ["img_size=48", "epochs=2"], specialist.Search(budget=5),
                                         write=True)
    assert tuning.written and "it beats the flat model at 22 px" in tuning.lines()[-1]


def test_the_bar_needs_a_flat_coarse_stage(detail_runs):
    result = cli("tune-fine", detail_runs / "hier", "--group", "patch", "--try", "epochs=1", "--bar")
    assert result.exit_code == 2 and "no flat model to train at a matched size" in result.output, result.output
    assert not (detail_runs / "hier" / "tuning").exists()


def test_keys_joined_by_plus_move_together():
    from hierclf.errors import RecipeError
    from hierclf.tune.specialist import settings_grid

    grid = settings_grid(["model+weights=tf_efficientnet_lite2+w2.safetensors,tf_efficientnet_lite0+",
                          "img_size=64,96"])
    assert [setting.label for setting in grid] == [
        "model=tf_efficientnet_lite2 weights=w2.safetensors img_size=64",
        "model=tf_efficientnet_lite2 weights=w2.safetensors img_size=96",
        "model=tf_efficientnet_lite0 img_size=64", "model=tf_efficientnet_lite0 img_size=96"]
    # a setting that names weights starts from them: init_from_coarse goes off with it
    assert grid[0].overrides("tops")[-1] == "fine.tops.init_from_coarse=false"
    assert not any("init_from_coarse" in text for text in grid[2].overrides("tops"))
    with pytest.raises(RecipeError, match="gives 1 values for the 2 keys"):
        settings_grid(["model+weights=tf_efficientnet_lite2"])
    with pytest.raises(RecipeError, match="img_size is already tried"):
        settings_grid(["img_size=64", "img_size+epochs=96+2"])


def test_another_architecture_from_its_weights_is_checked_before_anything_trains(linked_run, tmp_path):
    missing = tmp_path / "absent.safetensors"
    result = cli("tune-fine", linked_run, "--group", "patch", "--try", f"model+weights=test_efficientnet+{missing}")
    assert result.exit_code == 2 and "absent.safetensors" in result.output, result.output
    assert "init_from_coarse" not in result.output  # the named weights switched it off
    assert not (linked_run / "tuning").exists()
