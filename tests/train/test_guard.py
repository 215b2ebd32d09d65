"""The warnings that say fine-tuning is losing what the pretrained backbone knew."""
import logging
import math

import numpy as np
import pytest

from conftest import write_csv_dataset, write_recipe, write_weights
from hierclf.hierarchy.layout import OutputLayout
from hierclf.recipe.reading import load_recipe
from hierclf.recipe.schema import HeadConfig
from hierclf.run.files import read_json, read_npz
from hierclf.train import fit_coarse
from hierclf.train.guard import Guard, chance_loss
from hierclf.train.losses import build_layout_loss


def test_the_probe_is_checked_halfway_never_while_warming_up():
    from hierclf.train.guard import checked_epoch
    assert [checked_epoch(epochs, 1, 0) for epochs in (3, 6, 9)] == [2, 3, 5]
    assert checked_epoch(6, warmup_epochs=4, freeze_epochs=0) == 5
    # where that is the last epoch, the check at the end says it once, not twice
    assert checked_epoch(1, 1, 0) is checked_epoch(2, 1, 0) is checked_epoch(6, 0, 5) is checked_epoch(4, 9, 0) is None
    assert Guard("x", 1.0, probe_macro_f1=0.7, checked_epoch=None).after_epoch(
        {"epoch": 1, "train_loss": 0.5, "val_macro_f1": 0.1}) == []


def test_a_uniform_guess_costs_ln_c_whatever_the_loss_keys():
    heads = OutputLayout.of_heads([("a", ("0", "1")), ("b", ("0", "1", "2"))])
    targets = np.stack([np.arange(12) % 2, np.arange(12) % 3], axis=1)
    plain = build_layout_loss(heads, [HeadConfig(), HeadConfig(weight=0.5)], ["a", "b"], targets)
    assert chance_loss(plain, targets) == pytest.approx(math.log(2) + 0.5 * math.log(3))
    flat = OutputLayout.single(tuple("abcd"))
    focal = build_layout_loss(flat, [HeadConfig(loss="focal", focal_gamma=2.0, class_weights="balanced",
                                                label_smoothing=0.1)], ["coarse"], targets[:, 1:] % 4)
    assert chance_loss(focal, targets[:, 1:] % 4) == pytest.approx(0.75 ** 2 * math.log(4))


def test_the_guard_warns_once_each_where_it_should():
    guard = Guard("coarse fold 0", chance_loss=1.0, probe_macro_f1=0.7, checked_epoch=2)
    assert guard.after_epoch({"epoch": 1, "train_loss": 1.19, "val_macro_f1": 0.5}) == []  # epoch 1: the head alone
    wrecked = guard.after_epoch({"epoch": 1, "train_loss": 4.4, "val_macro_f1": 0.5})
    assert len(wrecked) == 1 and "4.4× a uniform guess's" in wrecked[0] and "freeze_epochs" in wrecked[0]
    below = guard.after_epoch({"epoch": 2, "train_loss": 0.5, "val_macro_f1": 0.69})
    assert len(below) == 1 and "below the linear probe's on this fold (0.7000)" in below[0]
    assert guard.after_epoch({"epoch": 3, "train_loss": 0.5, "val_macro_f1": 0.6}) == []
    assert guard.at_end(0.71) == [] and "does not beat the linear probe" in guard.at_end(0.69)[0]
    assert Guard("x", 1.0).at_end(0.1) == []  # no probe: nothing to compare


@pytest.fixture(scope="module")
def pretrained_recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    write_weights(root / "imagenet.safetensors")
    train_csv = write_csv_dataset(root / "data", per_class=20)
    return write_recipe(root / "recipe.toml", {"csv": str(train_csv)},
                        coarse={"weights": str(root / "imagenet.safetensors"), "epochs": 3})


def test_a_wrecking_rate_is_warned_of_and_the_probe_recorded(pretrained_recipe, tmp_path, caplog):
    recipe = load_recipe(pretrained_recipe, ["coarse.lr=3.0", "coarse.freeze_epochs=0"])
    with caplog.at_level(logging.INFO, logger="hierclf"):
        fit_coarse(recipe, tmp_path / "run", only_fold=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("first epoch's training loss" in w for w in warnings)
    assert any("below the linear probe's on this fold" in w for w in warnings)
    result = read_json(tmp_path / "run" / "coarse" / "fold-0" / "result.json")
    assert 0.0 <= result["probe_macro_f1"] <= 1.0


def test_the_probe_check_changes_nothing_that_is_learned(pretrained_recipe, tmp_path):
    """probe_check is a runtime key: the fold trains exactly as without it."""
    for check in ("true", "false"):
        fit_coarse(load_recipe(pretrained_recipe, [f"coarse.probe_check={check}", "coarse.epochs=2"]),
                   tmp_path / check, only_fold=0)
    on, off = (read_npz(tmp_path / name / "coarse" / "fold-0" / "val.npz") for name in ("true", "false"))
    np.testing.assert_array_equal(on["probs"], off["probs"])
    assert "probe_macro_f1" in read_json(tmp_path / "true" / "coarse" / "fold-0" / "result.json")
    assert "probe_macro_f1" not in read_json(tmp_path / "false" / "coarse" / "fold-0" / "result.json")


def test_a_pretrained_first_epoch_starts_at_the_chance_loss(pretrained_recipe, tmp_path):
    """A new head on loaded weights starts at zero: the first epoch's mean training loss is no more
    than a uniform guess's, and metrics.jsonl shows it."""
    fit_coarse(load_recipe(pretrained_recipe, ["coarse.epochs=1"]), tmp_path / "run", only_fold=0)
    first = read_json(tmp_path / "run" / "coarse" / "fold-0" / "result.json")
    line = (tmp_path / "run" / "coarse" / "fold-0" / "metrics.jsonl").read_text().splitlines()[0]
    assert __import__("json").loads(line)["train_loss"] <= math.log(3) * 1.01 and first["epochs_run"] == 1


def test_a_fold_probe_read_back_is_checked(pretrained_recipe, tmp_path):
    """The probe's score is shown beside each fold's (summary.json, the fit's lines): an edited one
    is refused naming the file, as every score read back is."""
    import json
    from hierclf.errors import HierclfError
    from hierclf.run.fold_files import read_result
    fit_coarse(load_recipe(pretrained_recipe, ["coarse.epochs=2"]), tmp_path / "run")
    summary = read_json(tmp_path / "run" / "coarse" / "summary.json")
    assert all(0.0 <= fold["probe_macro_f1"] <= 1.0 for fold in summary["folds"])
    folder = tmp_path / "run" / "coarse" / "fold-1"
    result = read_json(folder / "result.json")
    (folder / "result.json").write_text(json.dumps({**result, "probe_macro_f1": 1.5}))
    with pytest.raises(HierclfError, match="result.json: probe_macro_f1 is 1.5"):
        read_result(folder)
