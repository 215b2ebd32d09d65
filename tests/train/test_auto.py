"""lr = "auto" and batchnorm = "auto": chosen by short runs on fold 0's training rows, once per stage."""
import logging

import numpy as np
import pytest

import hierclf.train.auto as auto
from conftest import cli, write_csv_dataset, write_recipe, write_weights
from hierclf.errors import RecipeError
from hierclf.recipe.reading import load_recipe
from hierclf.run.files import read_json
from hierclf.run.fold_files import read_history
from hierclf.run.folder import Run


class _Stage:
    def __init__(self, config):
        self.config, self.name, self.key = config, "coarse", "coarse"


def _recipe(tmp_path, **coarse):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=15)
    return write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 2, **coarse})


def _fake_trials(monkeypatch, score):
    tried = []

    def trial(run, stage, items, setting, rows, placement):
        tried.append(setting)
        return score(*setting)

    monkeypatch.setattr(auto, "_trial", trial)
    monkeypatch.setattr(auto, "_trial_rows", lambda run, stage, items: ([0, 1], [2]))
    return tried


def test_the_ladder_is_walked_past_the_edge_the_best_sits_at_for_each_mode(monkeypatch, tmp_path):
    """Batch statistics peaking at 3e-3 (the first three put the best at the top edge: 3e-3 is
    tried, then 1e-2, and the walk stops after two extensions); frozen ones peaking at 1e-4, the
    lower edge (then 3e-5, which loses). The best pair wins."""
    tried = _fake_trials(monkeypatch, lambda mode, lr: (0.9 if mode == "train" else 0.95) - abs(
        lr - (3e-3 if mode == "train" else 1e-4)))
    weights = write_weights(tmp_path / "w.safetensors")
    stage = load_recipe(_recipe(tmp_path, weights=str(weights)), ["coarse.lr=auto", "coarse.batchnorm=auto"]).coarse
    choice = auto._choose(None, _Stage(stage), None, None)
    assert [lr for mode, lr in tried if mode == "train"] == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    assert [lr for mode, lr in tried if mode == "frozen"] == [1e-4, 3e-4, 1e-3, 3e-5]
    assert (choice["batchnorm"], choice["lr"]) == ("frozen", 1e-4) and len(choice["trials"]) == 9
    # a fixed rate: one trial per mode; one mode asked for: its ladder alone
    tried.clear()
    stage = load_recipe(_recipe(tmp_path, weights=str(weights)), ["coarse.lr=3e-3", "coarse.batchnorm=auto"]).coarse
    assert auto._choose(None, _Stage(stage), None, None)["batchnorm"] == "frozen"
    assert tried == [("train", 3e-3), ("frozen", 3e-3)]
    # a loss is best lowest; ties go to the lower rate, then to batch statistics
    assert auto._best({("train", 1e-3): 0.5, ("train", 3e-4): 0.5, ("frozen", 1e-4): 0.7}, "val_loss") == \
        ("train", 3e-4)
    assert auto._best({("frozen", 3e-4): 0.5, ("train", 3e-4): 0.5}, "val_macro_f1") == ("train", 3e-4)


def test_auto_chooses_once_writes_its_trials_and_every_fold_trains_at_the_choice(tmp_path, caplog):
    recipe = _recipe(tmp_path, lr="auto")
    with caplog.at_level(logging.INFO, logger="hierclf"):
        assert cli("fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    choice = read_json(tmp_path / "run" / "coarse" / "auto.json")
    scores = {trial["lr"]: trial["val_macro_f1"] for trial in choice["trials"]}
    assert {trial["batchnorm"] for trial in choice["trials"]} == {"train"}  # a network from scratch: batch statistics
    assert len(scores) >= 3 and choice["lr"] == max(scores, key=lambda lr: (scores[lr], -lr))
    assert choice["train_rows"] + choice["val_rows"] == 30  # fold 0's training rows: 2 of 3 folds of 45
    said = [r.getMessage() for r in caplog.records if "\"auto\" chose" in r.getMessage()]
    assert len(said) == 1 and f"chose lr {choice['lr']:g}, batchnorm train" in said[0]
    # the other folds read the choice: no second trial, and the peak rate is the chosen one
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hierclf"):
        assert cli("fit-coarse", tmp_path / "run" / "recipe.toml", "--out", tmp_path / "run").exit_code == 0
    messages = [r.getMessage() for r in caplog.records]
    assert not any(message.startswith("coarse trial") for message in messages)
    assert sum(f"chose lr {choice['lr']:g}, batchnorm train before" in message for message in messages) == 1
    for fold in range(3):  # cosine over 2 epochs, stepped per update: half way down from the chosen peak
        history = read_history(tmp_path / "run" / "coarse" / f"fold-{fold}")
        assert history[0]["lr"] == pytest.approx(1e-6 + (choice["lr"] - 1e-6) / 2) and len(history) == 2


def test_auto_is_refused_where_it_cannot_choose(tmp_path):
    with pytest.raises(RecipeError, match=r"coarse.min_lr = 5e-05 is not below the lowest rate lr = \"auto\" tries"):
        load_recipe(_recipe(tmp_path), ["coarse.lr=auto", "coarse.min_lr=5e-5"])
    with pytest.raises(RecipeError, match=r"coarse.batchnorm = 'auto' applies to a stage that starts from trained"):
        load_recipe(_recipe(tmp_path), ["coarse.batchnorm=auto"])
    assert load_recipe(_recipe(tmp_path), ["coarse.lr=auto"]).coarse.lr == "auto"


def test_a_damaged_choice_is_named(tmp_path):
    recipe = _recipe(tmp_path, lr="auto", epochs=1)
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    for damaged in ('{"lr": -1, "batchnorm": "train"}', '{"lr": 0.001, "batchnorm": "sometimes"}'):
        (tmp_path / "run" / "coarse" / "auto.json").write_text(damaged)
        result = cli("-q", "fit-coarse", tmp_path / "run" / "recipe.toml", "--out", tmp_path / "run", "--fold", 1)
        assert result.exit_code == 2 and "auto.json" in result.output and "delete it to choose again" in result.output


def test_a_trial_keeps_the_recipes_epochs_and_schedule_over_a_share_of_each(tmp_path, monkeypatch):
    """Four epochs with one warming up: each trial runs four epochs, each drawing half the trial's
    rows, so it sees them twice (TRIAL_PASSES) with the run's own schedule; the folds draw all."""
    from hierclf.train.fold import FoldLoaders

    shares, drawing = [], FoldLoaders.of

    def recorded(self, rows, training=False, share=1.0):
        if training:
            shares.append(share)
        return drawing(self, rows, training, share)

    monkeypatch.setattr(FoldLoaders, "of", recorded)
    recipe = _recipe(tmp_path, lr="auto", epochs=4, warmup_epochs=1)
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    trials = len(read_json(tmp_path / "run" / "coarse" / "auto.json")["trials"])
    assert shares == [0.5] * trials + [1.0]


def _relabel(train_csv, count, label="rare"):
    """The first `count` rows of the CSV given a class of their own."""
    lines = train_csv.read_text().splitlines()
    for index in range(1, count + 1):
        lines[index] = lines[index].split(",")[0] + f",{label}"
    train_csv.write_text("\n".join(lines) + "\n")


def test_a_class_too_rare_to_split_trains_every_trial_and_scores_in_none(tmp_path, monkeypatch):
    """Three images of a class: the run's 3 folds take it (one a fold), fold 0's training rows hold
    two, too few to split in three; they go to every trial's training side, the rest is split."""
    seen = []

    def trial(run, stage, items, setting, rows, placement):
        seen.append((items, rows))
        return 0.5

    monkeypatch.setattr(auto, "_trial", trial)
    train_csv = write_csv_dataset(tmp_path / "data", per_class=15)
    _relabel(train_csv, 3)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 1, "lr": "auto"})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    items, (train_rows, scored_rows) = seen[0]
    rare = items.class_names.index("rare")
    assert (items.labels[train_rows] == rare).sum() == 2 and (items.labels[scored_rows] == rare).sum() == 0
    fold_0_training = np.flatnonzero(Run.open(tmp_path / "run").folds.fold != 0)
    assert sorted([*train_rows, *scored_rows]) == fold_0_training.tolist()


def test_batchnorm_auto_too_few_rows_to_choose_keeps_batch_statistics_and_lr_auto_is_refused(tmp_path, caplog):
    """The default batchnorm = "auto" of a pretrained stage never stops a run its folds allow: with
    too few rows to split fold 0's in three it keeps batch statistics untried, and says so."""
    weights = write_weights(tmp_path / "w.safetensors")
    train_csv = write_csv_dataset(tmp_path / "data", per_class=3)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 1, "weights": str(weights)})
    with caplog.at_level(logging.WARNING, logger="hierclf"):
        assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    choice = read_json(tmp_path / "run" / "coarse" / "auto.json")
    assert choice["batchnorm"] == "train" and choice["trials"] == [] and "needs at least 3" in choice["untried"]
    assert any("keeps batch statistics (\"train\"), untried" in r.getMessage() for r in caplog.records)
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run-lr", "--set", "coarse.lr=auto")
    assert result.exit_code == 2 and "set lr in [coarse]" in result.output
    assert not (tmp_path / "run-lr" / "coarse" / "auto.json").exists()
