"""lr = "auto": the rate chosen by short runs on fold 0's training rows, once per stage."""
import logging

import pytest

import hierclf.train.rate as rate
from conftest import cli, write_csv_dataset, write_recipe
from hierclf.errors import RecipeError
from hierclf.recipe.reading import load_recipe
from hierclf.run.files import read_json
from hierclf.run.fold_files import read_history


def test_the_ladder_is_walked_past_the_edge_the_best_sits_at(monkeypatch, tmp_path):
    """Scores peaking at 3e-3: the first three (1e-4, 3e-4, 1e-3) put the best at the top edge, so
    3e-3 is tried, then 1e-2 (still an edge), and the walk stops after two extensions."""
    tried = []

    def trial(run, stage, items, lr, rows, placement):
        tried.append(lr)
        return 1.0 - abs(lr - 3e-3)

    monkeypatch.setattr(rate, "_trial", trial)
    monkeypatch.setattr(rate, "_trial_rows", lambda run, stage, items: ([0, 1], [2]))
    stage = load_recipe(_recipe(tmp_path), ["coarse.lr=auto"]).coarse
    choice = rate._choose(None, _Stage(stage), None, None)
    assert tried == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2] and choice["lr"] == 3e-3
    assert list(choice["trials"]) == ["0.0001", "0.0003", "0.001", "0.003", "0.01"]
    # a loss is best lowest; ties go to the lower rate
    assert rate._best({1e-3: 0.5, 3e-4: 0.5, 1e-4: 0.7}, "val_loss") == 3e-4
    assert rate._best({1e-3: 0.5, 3e-4: 0.5, 1e-4: 0.4}, "val_macro_f1") == 3e-4


class _Stage:
    def __init__(self, config):
        self.config, self.name, self.key = config, "coarse", "coarse"


def _recipe(tmp_path, **coarse):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=15)
    return write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 2, **coarse})


def test_auto_chooses_once_writes_its_trials_and_every_fold_trains_at_the_choice(tmp_path, caplog):
    recipe = _recipe(tmp_path, lr="auto")
    with caplog.at_level(logging.INFO, logger="hierclf"):
        assert cli("fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    choice = read_json(tmp_path / "run" / "coarse" / "lr.json")
    scores = {float(lr): value for lr, value in choice["trials"].items()}
    assert len(scores) >= 3 and choice["lr"] == max(scores, key=lambda lr: (scores[lr], -lr))
    assert choice["train_rows"] + choice["val_rows"] == 30  # fold 0's training rows: 2 of 3 folds of 45
    said = [r.getMessage() for r in caplog.records if "lr = \"auto\" chose" in r.getMessage()]
    assert len(said) == 1 and f"chose {choice['lr']:g}" in said[0]
    # the other folds read the choice: no second trial, and the peak rate is the chosen one
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hierclf"):
        assert cli("fit-coarse", tmp_path / "run" / "recipe.toml", "--out", tmp_path / "run").exit_code == 0
    messages = [r.getMessage() for r in caplog.records]
    assert not any(message.startswith("coarse lr ") for message in messages)  # no trial's epochs
    assert sum(f"chose {choice['lr']:g} before" in message for message in messages) == 1
    for fold in range(3):  # cosine over 2 epochs, stepped per update: half way down from the chosen peak
        history = read_history(tmp_path / "run" / "coarse" / f"fold-{fold}")
        assert history[0]["lr"] == pytest.approx(1e-6 + (choice["lr"] - 1e-6) / 2) and len(history) == 2


def test_auto_is_refused_where_the_schedule_floor_is_above_its_lowest_rate(tmp_path):
    with pytest.raises(RecipeError, match=r"coarse.min_lr = 5e-05 is not below the lowest rate lr = \"auto\" tries"):
        load_recipe(_recipe(tmp_path), ["coarse.lr=auto", "coarse.min_lr=5e-5"])
    assert load_recipe(_recipe(tmp_path), ["coarse.lr=auto"]).coarse.lr == "auto"


def test_a_damaged_choice_is_named(tmp_path):
    recipe = _recipe(tmp_path, lr="auto", epochs=1)
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    (tmp_path / "run" / "coarse" / "lr.json").write_text('{"lr": -1}')
    result = cli("-q", "fit-coarse", tmp_path / "run" / "recipe.toml", "--out", tmp_path / "run", "--fold", 1)
    assert result.exit_code == 2 and "lr.json" in result.output and "delete it to choose the rate again" in result.output
