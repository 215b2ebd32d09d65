"""One fold of one stage: the rows it trains and validates on, where its model starts, what it writes."""
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY_STAGE, mask_image, mask_recipe, write_csv_dataset, write_mask_dataset, write_recipe
from conftest import MASK_HEADS, Killed, cli, kill_after_saving, write_detail_dataset, write_weights
from hierclf.data import Items
from hierclf.run.files import load_weights, read_json, read_npz
from hierclf.data.labels import encode_factors
from hierclf.models.factory import create_model
from hierclf.recipe.reading import load_recipe, recipe_from_dict
from hierclf.run.folder import Run
from hierclf.train import fit_coarse


def test_specialists_train_only_on_their_group_yet_predict_every_row_of_their_fold(detail_runs):
    run = Run.open(detail_runs / "hier")
    in_group = np.isin(run.folds.labels, [2, 3])
    stage = "fine/patch"
    assert read_json(run.fold_dir(stage, 0) / "model.json")["class_names"] == ["checked", "plain"]
    for fold in range(3):
        result = read_json(run.fold_dir(stage, fold) / "result.json")
        assert result["train_rows"] == int((in_group & (run.folds.fold != fold)).sum())
        assert result["val_rows"] == int((in_group & (run.folds.fold == fold)).sum())
        val = read_npz(run.fold_dir(stage, fold) / "val.npz")
        # it predicts every row of its fold (for the combiners), but targets only its group's rows
        assert sorted(val["ids"]) == sorted(run.folds.ids[run.folds.fold == fold])
        member = dict(zip(run.folds.ids, in_group))
        assert all((target >= 0) == member[i] for i, target in zip(val["ids"], val["targets"]))
    assert read_json(run.summary_path(stage))["rows"] == int(in_group.sum())


def test_specialists_can_start_from_the_coarse_model_of_their_own_fold(detail_runs, tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(detail_runs / "data" / "train.csv")},
                          coarse={"img_size": 12, "epochs": 1},
                          hierarchy={"groups": [["checked", "plain"]], "group_names": ["patch"]})
    overrides = ("--set", "fine.init_from_coarse=true", "--set", "fine.lr=1e-12", "--set", "fine.scheduler=none",
                 "--set", "fine.epochs=1", "--set", "fine.img_size=48")
    for fold in (0, 1):
        assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", fold).exit_code == 0
        assert cli("-q", "fit-fine", tmp_path / "run", "--fold", fold, *overrides).exit_code == 0
    run = Run.open(tmp_path / "run")
    assert run.finished_folds("fine/patch") == [0, 1]
    for fold, other in ((0, 1), (1, 0)):
        coarse = load_weights(run.fold_dir("coarse", fold) / "weights.safetensors")
        elsewhere = load_weights(run.fold_dir("coarse", other) / "weights.safetensors")
        specialist = load_weights(run.fold_dir("fine/patch", fold) / "weights.safetensors")
        backbone = [k for k in coarse if not k.startswith("fc.") and coarse[k].is_floating_point()
                    and "running" not in k]
        assert all(np.allclose(specialist[k].numpy(), coarse[k].numpy(), atol=1e-6) for k in backbone)
        assert not all(np.allclose(specialist[k].numpy(), elsewhere[k].numpy()) for k in backbone)
        assert specialist["fc.weight"].shape[0] == 2


def test_a_head_with_loss_weight_zero_is_never_trained(tmp_path):
    """The recipe's per-head loss keys reach the training loop: age's head keeps its initial weights."""
    rng = np.random.default_rng(0)
    values = np.array([(m, g, a) for m in range(3) for g in range(2) for a in range(3)] * 3)
    images = np.stack([mask_image(*row, rng, size=16) for row in values])
    stage = {**TINY_STAGE, "img_size": 16, "in_chans": 3, "epochs": 2, "weight_decay": 0.0}
    recipe = recipe_from_dict({"folds": {"count": 3}, "coarse": stage,
                               "hierarchy": {"heads": {"mask": 3, "gender": 2, "age": 3}},
                               "heads": {"age": {"weight": 0.0}}})
    items = Items.from_arrays(images, labels=encode_factors(values, (3, 2, 3)))  # joint labels, class names 0..17
    fit_coarse(recipe, tmp_path / "run", only_fold=0, items=items)
    run = Run.open(tmp_path / "run")
    trained = load_weights(run.fold_dir("coarse", 0) / "weights.safetensors")
    initial, _ = create_model(recipe.coarse, run.coarse_stage.layout, seed=recipe.coarse.seed + 0)
    assert np.array_equal(trained["heads.age.weight"].numpy(), initial.heads["age"].weight.detach().numpy())
    assert not np.array_equal(trained["heads.mask.weight"].numpy(), initial.heads["mask"].weight.detach().numpy())
    assert run.hierarchy.class_names == tuple(str(label) for label in range(18))  # unnamed heads: joint indices


def test_one_model_per_attribute_and_a_head_specialist_from_its_own_model(tmp_path):
    images = write_mask_dataset(tmp_path / "data", people_per_kind=4)
    mask_recipe(tmp_path / "separate.toml", images, {"heads": MASK_HEADS, "separate": True},
                fine={"age": {"init_from_coarse": True, "epochs": 2}})
    assert cli("-q", "fit-coarse", tmp_path / "separate.toml", "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    assert cli("-q", "fit-fine", tmp_path / "run", "--fold", 0).exit_code == 0
    run = Run.open(tmp_path / "run")
    weights = load_weights(run.fold_dir("coarse", 0) / "weights.safetensors")
    assert {name.split(".")[1] for name in weights} == {"mask", "gender", "age"}
    result = read_json(run.fold_dir("coarse", 0) / "result.json")
    assert all(result[f"val_{head}_macro_f1"] > 0.7 for head in MASK_HEADS), result  # chance: 0.33, 0.5, 0.33
    assert read_json(run.fold_dir("fine/age", 0) / "result.json")["val_macro_f1"] > 0.7


def test_every_toolkit_key_of_the_recipe_reaches_training(tmp_path, monkeypatch):
    import hierclf.train.fold as fold_module

    seen = {}
    real_fit = fold_module.fit

    def spying_fit(model, train_loader, val_loader, config, criterion, *args, **options):
        seen.update(config=config, sampler=train_loader.sampler, transform=train_loader.dataset.transform,
                    criterion=criterion, val_sampler=val_loader.sampler)
        return real_fit(model, train_loader, val_loader, config, criterion, *args, **options)

    monkeypatch.setattr(fold_module, "fit", spying_fit)
    train_csv = write_csv_dataset(tmp_path / "data", per_class=20)
    recipe = load_recipe(write_recipe(tmp_path / "recipe.toml", {"csv": str(train_csv)}, coarse={
        "sampler": "balanced", "class_cap": 24, "ema": True, "ema_decay": 0.9, "mixup_alpha": 0.2,
        "mix_prob": 0.5, "label_smoothing": 0.1, "freeze_epochs": 1, "backbone_lr": 0.5, "epochs": 12,
        "augment": [{"name": "Affine", "translate_percent": [-0.05, 0.05], "p": 0.5}]}))
    fit_coarse(recipe, tmp_path / "run", only_fold=0)
    assert seen["config"] == recipe.coarse  # every key of the stage, as the recipe set it, reaches fit
    assert type(seen["sampler"]).__name__ == "WeightedRandomSampler" and seen["sampler"].num_samples == 72
    assert "Affine" in repr(seen["transform"]) and "Affine" not in repr(seen["val_sampler"])
    assert seen["criterion"].losses[0].label_smoothing == 0.1
    result = read_json(Run.open(tmp_path / "run").fold_dir("coarse", 0) / "result.json")
    assert result["val_accuracy"] >= 0.7, result  # chance is 1/3


def test_a_fold_writes_its_files_and_its_kept_models_training_score(flat_run):
    run = Run.open(flat_run[0])
    for fold in range(3):
        names = {p.name for p in run.fold_dir("coarse", fold).iterdir()}
        assert names == {"weights.safetensors", "model.json", "metrics.jsonl", "val.npz", "result.json"}
        result = read_json(run.fold_dir("coarse", fold) / "result.json")
        assert 0.8 <= result["train_macro_f1"] <= 1.0 and result["train_rows"] + result["val_rows"] == 60
        assert len((run.fold_dir("coarse", fold) / "metrics.jsonl").read_text().splitlines()) == result["epochs_run"]
    assert not list(run.root.rglob("*.tmp"))


def test_a_specialist_starts_from_its_own_folds_flat_model_restricted_to_its_group(detail_runs):
    from hierclf.train.fold import build_fold_model

    run = Run.open(detail_runs / "linked")
    stage = run.specialist_stages["patch"]
    members = list(run.hierarchy.group("patch").members)
    flat = {fold: load_weights(run.fold_dir("coarse", fold) / "weights.safetensors") for fold in range(3)}
    assert run.fold_dir("coarse", 0) == detail_runs / "flat" / "coarse" / "fold-0"
    for fold in range(3):
        model, _ = build_fold_model(run, stage, fold, seed=fold)
        state = model.state_dict()
        assert torch.equal(state["fc.weight"], flat[fold]["fc.weight"][members])  # the flat head's group rows
        assert torch.equal(state["fc.bias"], flat[fold]["fc.bias"][members])
        convs = [name for name in state if name.endswith("conv1.weight")]
        assert convs and all(torch.equal(state[name], flat[fold][name]) for name in convs)
        other = (fold + 1) % 3
        assert not torch.equal(state[convs[0]], flat[other][convs[0]])  # not another fold's weights


# --- LP-FT: every new head starts as the fold's linear probe, and the start is epoch 0

LPFT = ("--set", "coarse.head_init=probe", "--set", "coarse.batchnorm=frozen")
WRECKING = ("--set", "coarse.lr=3.0", "--set", "coarse.warmup_epochs=0", "--set", "coarse.epochs=2")
"""A rate that wrecks the features: no trained epoch beats the start, so the start is kept."""


def _start_is_the_probe(folder, heads=()):
    """The fold began as its probe (epoch 0 scores as the probe fit beside it), and with a wrecking
    rate kept it: its kept model is never below its own probe on its validation rows."""
    result = read_json(folder / "result.json")
    start = result["start"]
    assert start["epoch"] == 0 and start["val_macro_f1"] == pytest.approx(result["probe_macro_f1"], abs=1e-12)
    assert all(f"val_{head}_macro_f1" in start for head in heads)
    assert result["best_epoch"] == 0 and result["val_macro_f1"] == start["val_macro_f1"] >= result["probe_macro_f1"]
    return result


def test_lpft_a_flat_fold_starts_as_the_probe_hierclf_probe_fits_and_keeps_it(tmp_path):
    weights = write_weights(tmp_path / "imagenet.safetensors")
    train_csv = write_csv_dataset(tmp_path / "data", per_class=20)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"weights": str(weights)})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0, *LPFT, *WRECKING).exit_code == 0
    result = _start_is_the_probe(tmp_path / "run" / "coarse" / "fold-0")
    # the same regression, fit on its own by `hierclf probe` of the run: the same scores, the same outputs
    assert cli("-q", "probe", tmp_path / "run", "--out", tmp_path / "probe").exit_code == 0
    probe = read_json(tmp_path / "probe" / "coarse" / "fold-0" / "result.json")
    assert result["start"]["val_macro_f1"] == pytest.approx(probe["val_macro_f1"], abs=1e-9)
    kept, fitted = (read_npz(run / "coarse" / "fold-0" / "val.npz") for run in (tmp_path / "run", tmp_path / "probe"))
    order = np.argsort(kept["ids"])
    assert (kept["ids"][order] == np.sort(fitted["ids"])).all()
    np.testing.assert_allclose(kept["probs"][order], fitted["probs"][np.argsort(fitted["ids"])], atol=1e-4)


@pytest.mark.parametrize("separate", [False, True])
def test_lpft_heads_start_as_a_probe_per_head(tmp_path, separate):
    weights = write_weights(tmp_path / "imagenet.safetensors")
    images = write_mask_dataset(tmp_path / "data", people_per_kind=3)
    recipe = mask_recipe(tmp_path / "heads.toml", images, {"heads": MASK_HEADS, "separate": separate})
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0, "--set",
                 f"coarse.weights={weights}", *LPFT, *WRECKING)
    assert result.exit_code == 0, result.output
    _start_is_the_probe(tmp_path / "run" / "coarse" / "fold-0", heads=MASK_HEADS)


def test_lpft_a_specialist_starts_as_the_probe_of_its_group(tmp_path):
    """A group's specialist with a new head from pretrained weights, and one started from the coarse
    model of its fold (its probe then reads the coarse model's features)."""
    weights = write_weights(tmp_path / "imagenet.safetensors")
    train_csv = write_detail_dataset(tmp_path / "data", per_class=12)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"img_size": 24, "epochs": 1},
                          hierarchy={"groups": [["checked", "plain"]], "group_names": ["patch"]})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0).exit_code == 0
    specialist = [arg.replace("coarse.", "fine.") for arg in (*LPFT, *WRECKING)]
    for start in (f"fine.weights={weights}", "fine.init_from_coarse=true"):
        out = tmp_path / start.split("=")[0]
        shutil.copytree(tmp_path / "run", out)
        result = cli("-q", "fit-fine", out, "--fold", 0, "--set", start, *specialist)
        assert result.exit_code == 0, result.output
        assert _start_is_the_probe(out / "fine" / "patch" / "fold-0")["val_rows"] > 0


def test_lpft_the_start_is_scored_but_not_kept_where_monitor_is_a_training_figure(tmp_path):
    weights = write_weights(tmp_path / "imagenet.safetensors")
    train_csv = write_csv_dataset(tmp_path / "data", per_class=10)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"weights": str(weights)})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0, *LPFT, *WRECKING, "--set",
               "coarse.monitor=train_loss").exit_code == 0
    result = read_json(tmp_path / "run" / "coarse" / "fold-0" / "result.json")
    assert result["start"]["val_macro_f1"] == pytest.approx(result["probe_macro_f1"]) and result["best_epoch"] >= 1


def test_lpft_a_fold_killed_after_an_epoch_resumes_with_its_start_as_it_was(tmp_path, monkeypatch):
    weights = write_weights(tmp_path / "imagenet.safetensors")
    train_csv = write_csv_dataset(tmp_path / "data", per_class=10)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"weights": str(weights),
                                                                               "epochs": 3})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "whole", "--fold", 0, *LPFT).exit_code == 0
    kill_after_saving(monkeypatch, epoch=1)
    with pytest.raises(Killed):
        cli("-q", "fit-coarse", recipe, "--out", tmp_path / "cut", "--fold", 0, *LPFT)
    monkeypatch.undo()
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "cut", "--fold", 0, *LPFT).exit_code == 0
    whole, cut = (read_json(run / "coarse" / "fold-0" / "result.json") for run in (tmp_path / "whole", tmp_path / "cut"))
    for result in (whole, cut):
        result["start"].pop("seconds")
    assert whole == cut
