"""TensorBoard event files while a run trains: read back with TensorBoard's own reader, they hold
what metrics.jsonl holds, epoch by epoch, once each even when a fold was killed and resumed."""
import json

import pytest

from conftest import MASK_HEADS, Killed, cli, mask_recipe, write_csv_dataset, write_mask_dataset, write_recipe
from hierclf.train.board import Board, tag
from hierclf.train.record import FitRecord


def read_events(folder):
    """The folder's event files as TensorBoard itself reads them (orphaned steps purged)."""
    from tensorboard.backend.event_processing import event_accumulator  # make test installs the extra

    events = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0,
                                                                            "tensors": 0})
    events.Reload()
    return events


def assert_events_equal_metrics(fold):
    lines = [json.loads(line) for line in (fold / "metrics.jsonl").read_text().splitlines()]
    events = read_events(fold)
    keys = [key for key in lines[0] if key != "epoch"]
    assert sorted(events.Tags()["scalars"]) == sorted(tag(key) for key in keys)
    for key in keys:
        scalars = events.Scalars(tag(key))
        assert [event.step for event in scalars] == [line["epoch"] for line in lines], key  # each epoch once
        assert [event.value for event in scalars] == pytest.approx([line[key] for line in lines], rel=1e-6)
    return events


def test_every_figure_of_metrics_jsonl_the_recipe_and_the_confusion_matrix(tmp_path):
    data = write_csv_dataset(tmp_path / "data", per_class=12)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(data)}, coarse={"epochs": 3}, folds={"count": 2, "seed": 0})
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--tensorboard")
    assert result.exit_code == 0, result.output
    for fold in (0, 1):
        events = assert_events_equal_metrics(tmp_path / "run" / "coarse" / f"fold-{fold}")
        assert {"train/loss", "val/loss", "val/macro_f1", "lr", "seconds"} <= set(events.Tags()["scalars"])
        assert "confusion" in events.Tags()["images"]
        assert any(name.startswith("recipe") for name in events.Tags()["tensors"])
    # a run without the key writes none
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "plain").exit_code == 0
    assert not list((tmp_path / "plain").rglob("events.out.tfevents.*"))


def test_a_heads_run_logs_each_heads_scores_and_confusion_matrix(tmp_path):
    images = write_mask_dataset(tmp_path / "data", people_per_kind=3)
    recipe = mask_recipe(tmp_path / "heads.toml", images, {"heads": MASK_HEADS})
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--tensorboard", "--set", "coarse.epochs=2")
    assert result.exit_code == 0, result.output
    events = assert_events_equal_metrics(tmp_path / "run" / "coarse" / "fold-0")
    assert {"val/mask_macro_f1", "val/gender_macro_f1", "val/age_macro_f1"} <= set(events.Tags()["scalars"])
    assert sorted(events.Tags()["images"]) == ["confusion/age", "confusion/gender", "confusion/mask"]


def test_a_killed_fold_resumes_its_event_files_without_a_duplicate_epoch(tmp_path, monkeypatch):
    data = write_csv_dataset(tmp_path / "data", per_class=12)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(data)}, coarse={"epochs": 4}, folds={"count": 2, "seed": 0})
    logged = Board.epoch

    def log_then_die(self, entry, *rest):  # killed after epoch 3 was logged, before its state was saved
        logged(self, entry, *rest)
        if entry["epoch"] == 3:
            raise Killed

    monkeypatch.setattr(Board, "epoch", log_then_die)
    with pytest.raises(Killed):
        cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--tensorboard")
    monkeypatch.undo()
    fold = tmp_path / "run" / "coarse" / "fold-0"
    assert [event.step for event in read_events(fold).Scalars("train/loss")] == [1, 2, 3]
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--tensorboard")
    assert result.exit_code == 0, result.output
    assert len(list(fold.glob("events.out.tfevents.*"))) == 2  # appended in a file of its own
    assert_events_equal_metrics(fold)


def test_only_the_writing_process_keeps_a_board(tmp_path):
    from hierclf.hierarchy.layout import OutputLayout

    board = Board(tmp_path, OutputLayout.single(["a", "b"]), "")
    assert board not in FitRecord("x", tmp_path, writes=False, loggers=[board]).callbacks  # torchrun's other ranks
    assert board in FitRecord("x", tmp_path, writes=True, loggers=[board]).callbacks


def test_without_tensorboard_installed_the_key_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    finding = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "tensorboard"
                        else finding(name, *rest))
    data = write_csv_dataset(tmp_path / "data", per_class=4)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(data)}, coarse={"tensorboard": True})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert ("coarse.tensorboard = true: TensorBoard is not installed; pip install 'hierclf[tensorboard]'"
            in result.stderr)
    assert not (tmp_path / "run").exists()


def test_a_tensorboard_that_fails_to_import_is_named_before_anything_is_written(tmp_path, monkeypatch):
    """Installed but broken (a protobuf or numpy it does not fit): one line with its error, among
    the checks, and no half-made run folder."""
    from conftest import break_import

    break_import(monkeypatch, "torch.utils.tensorboard", ImportError("numpy.core.multiarray failed to import"))
    data = write_csv_dataset(tmp_path / "data", per_class=4)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(data)}, coarse={"tensorboard": True})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "fails to import (ImportError: numpy.core.multiarray failed to import)" in result.stderr
    assert "coarse.tensorboard = true" in result.stderr and not (tmp_path / "run").exists()
