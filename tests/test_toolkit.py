"""The training toolkit: mixup/cutmix targets, samplers, EMA, a frozen backbone, the backbone's
learning rate and augmentation lists."""
import csv
import dataclasses
import tomllib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from click.testing import CliRunner

from conftest import shape_image, write_csv_dataset, write_recipe
from hierclf.cli import main
from hierclf.data import Items, load_training_items
from hierclf.data.augment import augment_transforms
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.data.images import decode_image
from hierclf.errors import RecipeError
from hierclf.inference import soft_vote
from hierclf.models import classifier_modules, create_model
from hierclf.recipe import HeadConfig, StageConfig, load_recipe, recipe_from_dict
from hierclf.train.kfold import assign_folds
from hierclf.train.losses import FocalLoss, build_stage_loss
from hierclf.train.loop import fit, seed_everything
from hierclf.train.mixing import BatchMixer
from hierclf.train.optim import build_optimizer
from test_train import CPU, TINY, loaders, train


def test_soft_one_hot_targets_cost_what_their_indices_do():
    generator = torch.Generator().manual_seed(3)
    logits, targets = torch.randn(20, 4, generator=generator), torch.randint(0, 4, (20,), generator=generator)
    weight = torch.tensor([1.0, 3.0, 0.5, 2.0])
    for loss in (FocalLoss(0.0, weight, 0.1), FocalLoss(2.0, weight, 0.1), FocalLoss(0.0)):
        assert torch.allclose(loss(logits, F.one_hot(targets, 4).float()), loss(logits, targets), atol=1e-6)
    # a mixed row costs the same mix of its two classes' losses (cross entropy is linear in the target)
    mixed = 0.3 * F.one_hot(targets, 4).float() + 0.7 * F.one_hot(targets.flip(0), 4).float()
    plain = FocalLoss(0.0)
    expected = 0.3 * F.cross_entropy(logits, targets) + 0.7 * F.cross_entropy(logits, targets.flip(0))
    assert torch.allclose(plain(logits, mixed), expected, atol=1e-6)


def test_label_smoothing_composes_with_mixed_targets():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(10, 5, generator=generator)
    mixed = torch.softmax(torch.randn(10, 5, generator=generator) * 3, 1)
    smoothed = mixed * (1 - 0.2) + 0.2 / 5  # what timm's mixup_target does with smoothing 0.2
    expected = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    assert torch.allclose(FocalLoss(0.0, None, 0.2)(logits, mixed), expected, atol=1e-6)


def _mixup_stage(**keys) -> StageConfig:
    return dataclasses.replace(TINY, **{"mixup_alpha": 1.0, **keys})


def test_mixup_targets_sum_to_one_and_mix_the_reversed_rows():
    seed_everything(0)
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 4, 4).clone()
    original = images.clone()
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed_images, soft = BatchMixer(_mixup_stage(), 3)(images, targets)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    lam = float(soft[0, 0])  # row 0 (class 0) is mixed with row 5 (class 2)
    assert 0 < lam < 1
    for row in range(6):
        partner = 5 - row
        expected = lam * F.one_hot(targets[row], 3) + (1 - lam) * F.one_hot(targets[partner], 3)
        assert torch.allclose(soft[row], expected.float(), atol=1e-6)
        assert torch.allclose(mixed_images[row], lam * original[row] + (1 - lam) * original[partner], atol=1e-5)


def test_cutmix_pastes_a_box_and_mixes_by_its_area():
    seed_everything(0)
    images = torch.zeros(4, 1, 16, 16)
    images[2:] = 1.0
    _, soft = BatchMixer(_mixup_stage(mixup_alpha=0.0, cutmix_alpha=1.0), 2)(images, torch.tensor([0, 0, 1, 1]))
    pasted = float(images[0].mean())  # the share of row 0 that now comes from row 3
    assert 0 < pasted < 1 and torch.allclose(soft[0], torch.tensor([1 - pasted, pasted]), atol=1e-6)


def test_mixup_with_heads_mixes_every_head_with_the_same_lambda():
    seed_everything(2)
    sizes = (3, 2)
    targets = torch.tensor([[0, 1], [2, 0], [1, 1], [2, 1]])
    _, soft = BatchMixer(_mixup_stage(), 6, sizes)(torch.zeros(4, 1, 2, 2), targets)
    mask, gender = soft.split(sizes, 1)
    assert torch.allclose(mask.sum(1), torch.ones(4)) and torch.allclose(gender.sum(1), torch.ones(4))
    lam = float(mask[0, 0])  # row 0 (mask 0, gender 1) with row 3 (mask 2, gender 1)
    assert torch.allclose(mask[0], torch.tensor([lam, 0.0, 1 - lam]), atol=1e-6)
    assert torch.allclose(gender[0], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(gender[1], torch.tensor([lam, 1 - lam]), atol=1e-6)  # row 1 (gender 0) with row 2 (1)
    heads = (("mask", 3, HeadConfig()), ("gender", 2, HeadConfig(label_smoothing=0.1)))
    loss = build_stage_loss(HeadConfig(), targets.numpy(), 6, "coarse", heads)
    assert torch.isfinite(loss(torch.randn(4, 5), soft))


def test_mixup_and_cutmix_still_learn():
    stage = _mixup_stage(cutmix_alpha=1.0, label_smoothing=0.1, epochs=10)
    _, _, result = train(stage)
    assert max(r["val_accuracy"] for r in result.history) >= 0.8  # chance is 1/3


def _labels_drawn(sampler: str, cap: int, labels: np.ndarray, epochs: int = 1) -> list[np.ndarray]:
    items = Items.from_arrays(np.zeros((len(labels), 4, 4, 1), dtype=np.uint8), labels, ["a", "b", "c"])
    dataset = ImageDataset(items, labels, build_transform(4, (0.5,), (0.5,)), channels=1)
    loader = make_loader(dataset, 1000, shuffle=True, workers=0, device=CPU, sampler=sampler, class_cap=cap)
    return [np.concatenate([targets.numpy() for _, targets, _ in loader]) for _ in range(epochs)]


def test_balanced_sampler_draws_every_class_about_equally():
    labels = np.repeat([0, 1, 2], [800, 150, 50])
    (drawn,) = _labels_drawn("balanced", 0, labels)
    counts = np.bincount(drawn, minlength=3)
    assert len(drawn) == 1000 and (np.abs(counts - 1000 / 3) < 60).all(), counts  # shuffled: 800/150/50
    (capped,) = _labels_drawn("balanced", 40, labels)
    assert len(capped) == 120


def test_class_cap_takes_at_most_cap_rows_of_each_class_anew_each_epoch():
    labels = np.repeat([0, 1, 2], [300, 40, 10])
    (drawn,) = _labels_drawn("shuffle", 30, labels)
    assert np.bincount(drawn, minlength=3).tolist() == [30, 30, 10]
    items = Items.from_arrays(np.zeros((len(labels), 4, 4, 1), dtype=np.uint8), labels, ["a", "b", "c"])
    dataset = ImageDataset(items, labels, build_transform(4, (0.5,), (0.5,)), channels=1)
    loader = make_loader(dataset, 1000, shuffle=True, workers=0, device=CPU, class_cap=30)
    epochs = [set(np.concatenate([rows.numpy() for _, _, rows in loader]).tolist()) for _ in range(2)]
    assert len(epochs[0]) == 70 and epochs[0] != epochs[1]  # no row twice; another subset next epoch


def test_ema_weights_differ_from_the_raw_ones_and_are_validated_and_kept():
    stage = dataclasses.replace(TINY, ema=True, ema_decay=0.9)
    model, val_loader, result = train(stage)
    raw = model.state_dict()
    kept = result.best_state
    assert any(not torch.allclose(raw[name].float(), kept[name].float()) for name in raw)
    # the validation scores are the kept (EMA) weights' own
    model.load_state_dict(kept)
    probs, _ = soft_vote([model], val_loader, CPU)
    assert np.allclose(probs, result.val_probs, atol=1e-5)
    assert max(r["val_accuracy"] for r in result.history) >= 0.6  # chance is 1/3; the average lags in 24 steps


def test_frozen_backbone_does_not_move_while_the_head_learns():
    seed_everything(0)
    model, _ = create_model(TINY, ("left", "middle", "right"))
    start = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_loader, val_loader = loaders(TINY)
    # two epochs, both frozen (the recipe refuses freeze_epochs ≥ epochs; fit itself allows it)
    fit(model, train_loader, val_loader, dataclasses.replace(TINY, freeze_epochs=2, epochs=2), CPU, num_classes=3)
    head_ids = {id(p) for module in classifier_modules(model) for p in module.parameters()}
    head = {name for name, p in model.named_parameters() if id(p) in head_ids}
    assert head == {"fc.weight", "fc.bias"}
    for name, tensor in model.state_dict().items():
        if name in head:
            assert not torch.equal(tensor, start[name]), name
        else:  # weights and BatchNorm statistics alike
            assert torch.equal(tensor, start[name]), name
    fit(model, train_loader, val_loader, dataclasses.replace(TINY, epochs=1), CPU, num_classes=3)
    moved = [name for name, tensor in model.state_dict().items() if not torch.equal(tensor, start[name])]
    assert set(moved) - head  # after the frozen epochs the backbone trains again


def test_backbone_lr_gives_the_backbone_its_own_rate():
    stage = dataclasses.replace(TINY, backbone_lr=0.1, lr=1e-3)
    model, _ = create_model(stage, ("a", "b", "c"))
    optimizer = build_optimizer(model, stage)
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    for group in optimizer.param_groups:
        is_head = {id(p) in head_ids for p in group["params"]}
        assert len(is_head) == 1
        assert group["lr"] == pytest.approx(1e-3 if is_head.pop() else 1e-4)
    decayed = [group["weight_decay"] for group in optimizer.param_groups]
    assert 0.0 in decayed and stage.weight_decay in decayed  # timm's no-decay split survives
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_augment_presets_and_lists_build_and_apply():
    rng = np.random.default_rng(0)
    image = np.stack([shape_image(1, rng, size=32)] * 3, axis=2)
    for preset in ("light", "heavy", "document"):
        transform = build_transform(32, (0.5,) * 3, (0.5,) * 3, preset, seed=0)
        assert transform(image=image)["image"].shape == (3, 32, 32)
    grey = build_transform(32, (0.5,), (0.5,), "heavy", seed=0)  # no hue or saturation on grey images
    colour = build_transform(32, (0.5,) * 3, (0.5,) * 3, "heavy", seed=0)
    assert "HueSaturationValue" not in repr(grey) and "HueSaturationValue" in repr(colour)
    flip = augment_transforms(({"name": "HorizontalFlip", "p": 1.0},))
    assert np.array_equal(flip[0](image=image)["image"], image[:, ::-1])
    nested = augment_transforms(({"name": "OneOf", "p": 1.0, "transforms": [{"name": "VerticalFlip", "p": 1.0}]},))
    assert np.array_equal(nested[0](image=image)["image"], image[::-1])


@pytest.mark.parametrize("entry, message", [
    ({"name": "HorizontalFlp"}, "albumentations has no transform 'HorizontalFlp' (did you mean 'HorizontalFlip'?)"),
    ({"name": "Affine", "rotte": 10}, "Affine: got an unexpected keyword argument 'rotte'"),
    ({"name": "GaussNoise", "std_range": [2, 1]}, "GaussNoise(std_range=(2, 1)) is refused by albumentations"),
    ({"p": 0.5}, "each transform needs name"),
])
def test_a_bad_augment_list_is_refused_with_the_key(entry, message):
    with pytest.raises(RecipeError) as caught:
        recipe_from_dict({"coarse": {"augment": [{"name": "HorizontalFlip"}, entry]}}, source="r.toml")
    assert "r.toml: coarse.augment[1]" in str(caught.value) and message in str(caught.value)


def test_toolkit_keys_are_checked():
    with pytest.raises(RecipeError, match="coarse.freeze_epochs = 10 leaves no epoch"):
        recipe_from_dict({"coarse": {"freeze_epochs": 10, "epochs": 10}})
    with pytest.raises(RecipeError, match="coarse.sampler"):
        recipe_from_dict({"coarse": {"sampler": "weighted"}})
    with pytest.raises(RecipeError, match="predict.tta: unknown TTA variant 'rot45'"):
        recipe_from_dict({"predict": {"tta": ["hflip", "rot45"]}})
    recipe = recipe_from_dict({"coarse": {"augment": [{"name": "Affine", "rotate": [-10, 10], "p": 0.5}]}})
    again = recipe_from_dict(tomllib.loads(recipe.to_toml()))
    assert again.coarse.augment == recipe.coarse.augment


def _loader_of(images: np.ndarray) -> torch.utils.data.DataLoader:
    items = Items.from_arrays(images, np.zeros(len(images), dtype=np.int64), ["a", "b", "c"])
    dataset = ImageDataset(items, None, build_transform(16, (0.5,), (0.5,)), channels=1)
    return make_loader(dataset, 8, shuffle=False, workers=0, device=CPU)


def test_tta_averages_the_variants():
    seed_everything(0)
    model, _ = create_model(TINY, ("a", "b", "c"))
    rng = np.random.default_rng(0)
    images = np.stack([shape_image(label, rng) for label in (0, 1, 2, 0, 1)])[..., None]
    plain, _ = soft_vote([model], _loader_of(images), CPU)
    flipped, _ = soft_vote([model], _loader_of(images[:, :, ::-1].copy()), CPU)
    turned, _ = soft_vote([model], _loader_of(np.rot90(images, 1, axes=(1, 2)).copy()), CPU)
    both, _ = soft_vote([model], _loader_of(images), CPU, tta=[("hflip", 1.0), ("rot90", 1.0)])
    assert np.allclose(both, (plain + flipped + turned) / 3, atol=1e-5)
    assert not np.allclose(both, plain, atol=1e-4)


def test_tta_scale_zooms_about_the_centre():
    from hierclf.inference import tta_view
    images = torch.zeros(1, 1, 8, 8)
    images[..., 3:5, 3:5] = 1.0
    zoomed_in = tta_view(images, ("scale", 2.0))
    assert zoomed_in.shape == images.shape and zoomed_in[..., 2:6, 2:6].min() > 0.5  # the centre grew
    zoomed_out = tta_view(images, ("scale", 0.5))
    assert zoomed_out.shape == images.shape and zoomed_out[..., :2, :].abs().max() == 0  # padded border


def test_augmented_copies_never_straddle_folds(tmp_path):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=10, groups_of=2)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(train_csv)}, coarse={"augment": "light"})
    out = tmp_path / "augmented"
    runner = CliRunner()
    result = runner.invoke(main, ["augment", str(recipe), "--out", str(out), "--copies", "3", "--classes",
                                  "left,2"])
    assert result.exit_code == 0, result.output
    assert "wrote 30 originals and 60 augmented copies (2 classes)" in result.stdout
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert len(rows) == 90 and {row["label"] for row in rows if "__aug" in row["id"]} == {"left", "right"}
    original_group = {row["id"]: row["group"] for row in rows if "__aug" not in row["id"]}
    changed = []
    for row in rows:
        if "__aug" in row["id"]:
            source = row["id"].split("__aug")[0] + ".png"
            assert row["group"] == original_group[source]  # a copy carries its original's group
            changed.append(not np.array_equal(decode_image(out / "train" / row["id"], 1),
                                              decode_image(out / "train" / source, 1)))
    assert np.mean(changed) > 0.7  # light applies each transform with p < 1: a few copies stay as they were
    items = load_training_items(load_recipe(recipe, [f"data.csv={out / 'train.csv'}"]).data)
    fold = assign_folds(items.labels, items.fold_groups, load_recipe(recipe).folds, items.class_names)
    for group in set(items.fold_groups):
        assert len(set(fold[items.fold_groups == group])) == 1, group
    for args, message in [(["--classes", "sideways"], "--classes: 'sideways' is neither a class name"),
                          ([], f"--out {out} already exists")]:
        target = out if not args else tmp_path / "other"
        bad = runner.invoke(main, ["augment", str(recipe), "--out", str(target), "--copies", "1", *args])
        assert bad.exit_code == 2 and message in bad.stderr, bad.output
        assert not (tmp_path / "other").exists()
    plain = write_recipe(tmp_path / "plain.toml", {"csv": str(train_csv)})
    bad = runner.invoke(main, ["augment", str(plain), "--out", str(tmp_path / "other"), "--copies", "1"])
    assert bad.exit_code == 2 and "coarse.augment is \"none\"" in bad.stderr


def test_every_toolkit_key_reaches_training_through_the_recipe(tmp_path, monkeypatch):
    import hierclf.data.dataset as dataset_module
    from hierclf.train import fit_coarse

    drawn = []
    real = dataset_module.build_sampler
    monkeypatch.setattr(dataset_module, "build_sampler", lambda *args: drawn.append(args[:2]) or real(*args))
    train_csv = write_csv_dataset(tmp_path / "data", per_class=20)
    recipe = load_recipe(write_recipe(tmp_path / "recipe.toml", {"csv": str(train_csv)}, coarse={
        "sampler": "balanced", "class_cap": 24, "ema": True, "ema_decay": 0.9, "mixup_alpha": 0.2,
        "mix_prob": 0.5, "label_smoothing": 0.1, "freeze_epochs": 1, "backbone_lr": 0.5, "epochs": 12,
        "augment": [{"name": "Affine", "translate_percent": [-0.05, 0.05], "p": 0.5}]}))
    summary = fit_coarse(recipe, tmp_path / "run")
    assert drawn == [("balanced", 24)] * 3  # one training loader per fold
    assert summary["oof_accuracy"] >= 0.7, summary  # chance is 1/3
    assert "diagnosis" in summary


def test_the_image_cache_changes_speed_not_results(tmp_path, caplog):
    from hierclf.runs import RunDir, read_npz
    from hierclf.train import fit_coarse

    train_csv = write_csv_dataset(tmp_path / "data", per_class=10)
    coarse = {"epochs": 3, "augment": "light", "img_size": 20}
    path = write_recipe(tmp_path / "recipe.toml", {"csv": str(train_csv)}, coarse=coarse)
    caplog.set_level("INFO", logger="hierclf")
    fit_coarse(load_recipe(path), tmp_path / "plain")
    fit_coarse(load_recipe(path, ["coarse.cache_mb=1"]), tmp_path / "cached")
    assert "cache: 30 images decoded once at 20 px" in caplog.text
    plain, cached = (read_npz(RunDir(tmp_path / name).oof_path("coarse")) for name in ("plain", "cached"))
    assert np.array_equal(plain["ids"], cached["ids"]) and np.allclose(plain["probs"], cached["probs"], atol=1e-6)
    caplog.clear()
    fit_coarse(load_recipe(path, ["coarse.cache_mb=1", "coarse.img_size=256", "coarse.epochs=1"]), tmp_path / "big")
    assert "30 images at 256 px need 2 MiB, more than cache_mb = 1; decoding every epoch" in caplog.text
