"""`fit`: one model on one split, for any output layout; randomness from its seed alone."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import Killed, kill_after_saving, shape_image
from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, TrainingOrder, build_transform, make_loader
from hierclf.models.inference import soft_vote
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.factory import classifier_modules, create_model
from hierclf.recipe.schema import HeadConfig, StageConfig, TrainConfig
from hierclf.hierarchy.stage import single_loss
from hierclf.errors import HierclfError
from hierclf.runtime.devices import cpu_has_bf16
from hierclf.train.loop import fit
from hierclf.train.record import FitRecord
from hierclf.train.losses import build_layout_loss

CPU = torch.device("cpu")
THREE = OutputLayout.single(("left", "middle", "right"))


def loaders(stage: StageConfig, per_class: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    images = np.stack([shape_image(label, rng) for label in labels])
    items = Items.from_arrays(images, labels, ["left", "middle", "right"])
    val = np.arange(len(labels)) % 4 == 0
    out = []
    for rows, training in ((np.flatnonzero(~val), True), (np.flatnonzero(val), False)):
        transform = build_transform(stage.img_size, (0.5,), (0.5,), stage.augment if training else "none", seed=0)
        dataset = ImageDataset(items.subset(rows), labels[rows], transform, channels=1)
        out.append(make_loader(dataset, stage.batch_size, workers=0, device=CPU,
                               order=TrainingOrder() if training else None))
    return out


def loss_of(stage, train_loader):
    return build_layout_loss(THREE, [single_loss(stage)], ["coarse"], train_loader.dataset.targets)


def train(stage: StageConfig, tmp_path=None):
    model, _ = create_model(stage, THREE, seed=stage.seed)
    train_loader, val_loader = loaders(stage)
    result = fit(model, train_loader, val_loader, stage, loss_of(stage, train_loader), seed=stage.seed,
                 record=FitRecord(folder=tmp_path))
    return model, val_loader, result


TINY = StageConfig(model="test_resnet", img_size=16, in_chans=1, epochs=8, batch_size=16, lr=5e-3, workers=0)


def test_fit_learns_keeps_the_best_epoch_and_logs(tmp_path):
    model, val_loader, result = train(TINY, tmp_path)
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] >= 0.9  # chance is 1/3
    assert best["val_macro_f1"] == max(r["val_macro_f1"] for r in result.history)
    # the kept weights are the best epoch's: they reproduce its validation probabilities
    model.load_state_dict(result.best_state)
    probs, rows = soft_vote([model], val_loader, CPU, THREE)
    assert np.allclose(probs, result.val_probs, atol=1e-5) and np.array_equal(rows, result.val_rows)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == TINY.epochs
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr",
            "seconds"} <= set(lines[0])


def test_early_stopping_with_patience_and_min_delta():
    stage = StageConfig(**{**TINY.__dict__, "lr": 1e-9, "patience": 2, "min_delta": 0.5, "epochs": 20})
    _, _, result = train(stage)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_same_seed_same_run_whatever_the_global_generators_hold():
    stage = dataclasses.replace(TINY, epochs=2, augment="light", mixup_alpha=0.4, drop_rate=0.2)
    torch.manual_seed(1)
    np.random.seed(1)
    first = train(stage)[2]
    torch.manual_seed(2)
    np.random.seed(2)
    second = train(stage)[2]
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(first.history) == strip(second.history)
    assert strip(train(dataclasses.replace(stage, seed=1))[2].history) != strip(first.history)


def test_label_smoothing_keeps_the_training_loss_off_zero():
    """With smoothing ε the best achievable loss is the entropy of the smoothed target, well above 0."""
    plain = train(StageConfig(**{**TINY.__dict__, "epochs": 8}))[2].history[-1]["train_loss"]
    smoothed = train(StageConfig(**{**TINY.__dict__, "epochs": 8, "label_smoothing": 0.3}))[2]
    assert smoothed.history[-1]["train_loss"] > plain + 0.2
    assert smoothed.history[smoothed.best_epoch - 1]["val_accuracy"] >= 0.9  # still learns


def _linear_fit(stage: TrainConfig, rows: int = 32, batch_size: int = 32):
    """One epoch of a BatchNorm-free linear model on fixed rows, in order: the weights it ends with.
    `fit` takes a TrainConfig: no model, loader or loss keys are needed to train a Linear."""
    rng = np.random.default_rng(3)
    labels = np.arange(rows) % 3
    items = Items.from_arrays(np.stack([shape_image(label, rng) for label in labels]), labels)
    transform = build_transform(16, (0.5,), (0.5,))
    train = make_loader(ImageDataset(items, labels, transform, 1), batch_size, workers=0, device=CPU)
    val = make_loader(ImageDataset(items, labels, transform, 1), 64, workers=0, device=CPU)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    loss = build_layout_loss(THREE, [HeadConfig()], ["coarse"], labels[:, None])
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = fit(model, train, val, stage, loss)
    return before, result.best_state


def test_accumulating_four_batches_of_8_is_one_step_of_32():
    base = dict(epochs=1, optimizer="sgd", momentum=0.0, lr=0.5, weight_decay=0.0, scheduler="none")
    start, accumulated = _linear_fit(TrainConfig(**base, accumulate=4), batch_size=8)
    _, whole = _linear_fit(TrainConfig(**base), batch_size=32)
    _, four_steps = _linear_fit(TrainConfig(**base), batch_size=8)
    for key in whole:
        assert torch.allclose(accumulated[key], whole[key], atol=1e-6), key
    assert not torch.allclose(four_steps["1.weight"], whole["1.weight"], atol=1e-4)  # without it: 4 steps
    assert not torch.allclose(start["1.weight"], whole["1.weight"])


@pytest.mark.parametrize("mode", ["norm", "value"])
def test_gradient_clipping_bounds_the_step(mode):
    base = dict(epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, weight_decay=0.0, scheduler="none")
    start, free = _linear_fit(TrainConfig(**base))
    _, clipped = _linear_fit(TrainConfig(**base, clip_grad=1e-3, clip_mode=mode))
    step = torch.cat([(clipped[k] - start[k]).flatten() for k in start])
    free_step = torch.cat([(free[k] - start[k]).flatten() for k in start])
    if mode == "norm":  # one SGD step of lr 1: the step is the clipped gradient
        assert step.norm() <= 1e-3 + 1e-6 < free_step.norm()
    else:
        assert step.abs().max() <= 1e-3 + 1e-6 < free_step.abs().max()


def test_compile_and_channels_last_change_speed_not_results():
    base = dict(epochs=2, optimizer="sgd", momentum=0.0, lr=0.5, weight_decay=0.0, scheduler="none")
    _, plain = _linear_fit(TrainConfig(**base), batch_size=8)
    _, compiled = _linear_fit(TrainConfig(**base, compile=True), batch_size=8)
    for key in plain:  # the compiled module trains the same parameters, and they are what is kept
        assert torch.allclose(compiled[key], plain[key], atol=1e-5), key
    _, _, eager = train(dataclasses.replace(TINY, epochs=2))
    _, _, last = train(dataclasses.replace(TINY, epochs=2, channels_last=True))
    assert np.allclose(eager.val_probs, last.val_probs, atol=3e-3)  # other kernels: rounding, grown by training


def test_ema_weights_differ_from_the_raw_ones_and_are_validated_and_kept():
    stage = dataclasses.replace(TINY, ema=True, ema_decay=0.9)
    model, val_loader, result = train(stage)
    raw = model.state_dict()
    kept = result.best_state
    assert any(not torch.allclose(raw[name].float(), kept[name].float()) for name in raw)
    # the validation scores are the kept (EMA) weights' own
    model.load_state_dict(kept)
    probs, _ = soft_vote([model], val_loader, CPU, THREE)
    assert np.allclose(probs, result.val_probs, atol=1e-5)
    assert max(r["val_accuracy"] for r in result.history) >= 0.6  # chance is 1/3; the average lags in 24 steps


@pytest.mark.parametrize("batchnorm", ["train", "frozen"])
def test_frozen_backbone_does_not_move_while_the_head_learns(batchnorm):
    model, _ = create_model(TINY, THREE)
    start = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    train_loader, val_loader = loaders(TINY)
    # two epochs, both frozen (the recipe refuses freeze_epochs ≥ epochs; fit itself allows it)
    fit(model, train_loader, val_loader, dataclasses.replace(TINY, freeze_epochs=2, epochs=2, batchnorm=batchnorm),
        loss_of(TINY, train_loader))
    head_ids = {id(p) for module in classifier_modules(model) for p in module.parameters()}
    head = {name for name, p in model.named_parameters() if id(p) in head_ids}
    assert head == {"fc.weight", "fc.bias"}
    weights = {name for name, _ in model.named_parameters()}
    statistics = {name for name in start if name.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert statistics
    for name, tensor in model.state_dict().items():
        if name in head:
            assert not torch.equal(tensor, start[name]), name
        elif name in weights or batchnorm == "frozen":  # batchnorm train: the statistics move with the batches
            assert torch.equal(tensor, start[name]), name
        else:
            assert name in statistics
    moved_statistics = {name for name in statistics if not torch.equal(model.state_dict()[name], start[name])}
    assert moved_statistics == (statistics if batchnorm == "train" else set())
    fit(model, train_loader, val_loader, dataclasses.replace(TINY, epochs=1), loss_of(TINY, train_loader))
    moved = [name for name, tensor in model.state_dict().items() if not torch.equal(tensor, start[name])]
    assert set(moved) - head - statistics  # after the frozen epochs the backbone's weights train again


def test_frozen_stages_stay_as_loaded_get_no_gradient_and_the_top_still_learns():
    from hierclf.models.factory import lowest_stages

    # as a specialist started from the coarse model: trained lower stages, a new top
    model, _, _ = train(TINY)
    for name, module in model.named_modules():
        if name.startswith(("layer3", "layer4", "fc")) and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    stage = dataclasses.replace(TINY, frozen_stages=2)  # test_resnet's stem and first stage
    start = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    frozen = {name for name, p in model.named_parameters() if any(p is q for q in lowest_stages(model, 2, "coarse"))}
    assert frozen and all(name.startswith(("conv1.", "bn1.", "layer1.")) for name in frozen)
    for p in model.parameters():
        p.grad = None
    train_loader, val_loader = loaders(stage)
    result = fit(model, train_loader, val_loader, stage, loss_of(stage, train_loader))
    assert max(r["val_accuracy"] for r in result.history) >= 0.8  # chance is 1/3
    lower = ("conv1.", "bn1.", "layer1.")
    for name, tensor in model.state_dict().items():
        if name.startswith(lower):  # weights and BatchNorm statistics alike
            assert torch.equal(tensor, start[name]), name
    assert any(not torch.equal(tensor, start[name]) for name, tensor in model.state_dict().items()
               if name.startswith("layer4."))
    parameters = dict(model.named_parameters())
    assert all(parameters[name].grad is None for name in frozen)  # no backward pass reached them
    assert all(p.requires_grad for p in model.parameters())  # trainable again once fit returns


def test_more_frozen_stages_than_the_model_has_are_refused_naming_the_key():
    from hierclf.errors import RecipeError
    from hierclf.models.factory import lowest_stages

    model, _ = create_model(TINY, THREE)
    with pytest.raises(RecipeError, match=r"fine.tops.frozen_stages = 5: test_resnet has 5 stages below its "
                                          r"classifier; freeze at most 4"):
        lowest_stages(model, 5, "fine.tops")


def test_mixup_and_cutmix_still_learn():
    stage = dataclasses.replace(TINY, mixup_alpha=1.0, cutmix_alpha=1.0, label_smoothing=0.1, epochs=10)
    _, _, result = train(stage)
    assert max(r["val_accuracy"] for r in result.history) >= 0.8  # chance is 1/3


def test_a_loss_that_becomes_nan_stops_training_naming_the_epoch_and_batch():
    from hierclf.errors import TrainingError

    stage = dataclasses.replace(TINY, epochs=2)
    model, _ = create_model(stage, THREE, seed=0)
    train_loader, val_loader = loaders(stage)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"coarse fold 0 epoch 1, batch 1: the loss is nan; training diverged"):
        fit(model, train_loader, val_loader, stage, loss_of(stage, train_loader), record=FitRecord("coarse fold 0"))


def test_a_fit_stopped_after_an_epoch_resumes_from_its_checkpoint_and_ends_the_same(tmp_path, monkeypatch):
    stage = dataclasses.replace(TINY, epochs=4, augment="light", mixup_alpha=0.4, drop_rate=0.2, ema=True,
                                ema_decay=0.9, scheduler="plateau")

    def run(folder):
        model, _ = create_model(stage, THREE, seed=0)
        train_loader, val_loader = loaders(stage)
        return fit(model, train_loader, val_loader, stage, loss_of(stage, train_loader), seed=5,
                   record=FitRecord(folder=folder))

    whole = run(tmp_path / "whole")
    kill_after_saving(monkeypatch, epoch=2)
    with pytest.raises(Killed):
        run(tmp_path / "cut")
    monkeypatch.undo()
    assert (tmp_path / "cut" / "resume.safetensors").exists()
    resumed = run(tmp_path / "cut")  # starts at epoch 3
    assert [r["val_loss"] for r in resumed.history] == pytest.approx([r["val_loss"] for r in whole.history], abs=1e-6)
    assert resumed.best_epoch == whole.best_epoch
    assert np.allclose(resumed.val_probs, whole.val_probs, atol=1e-6)
    assert all(torch.allclose(resumed.best_state[k].float(), whole.best_state[k].float(), atol=1e-6)
               for k in whole.best_state)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]  # each epoch once


def _digits_loaders(stage: StageConfig, upper: bool, rows: int):
    """scikit-learn's handwritten digits 0-4 or 5-9 (as 0-4), grey, a quarter held out."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    chosen = np.flatnonzero((digits.target >= 5) == upper)[:rows]
    images, labels = (digits.images[chosen] * 16).clip(0, 255).astype(np.uint8), digits.target[chosen] % 5
    items = Items.from_arrays(images, labels, list("abcde"))
    val = np.arange(len(labels)) % 4 == 0
    out = []
    for part, training in ((np.flatnonzero(~val), True), (np.flatnonzero(val), False)):
        transform = build_transform(stage.img_size, (0.5,), (0.5,), "none", seed=0)
        out.append(make_loader(ImageDataset(items.subset(part), labels[part], transform, channels=1),
                               stage.batch_size, workers=0, device=CPU, order=TrainingOrder() if training else None))
    return out


FIVE = OutputLayout.single(tuple("abcde"))


@pytest.fixture(scope="module")
def digits_weights(tmp_path_factory):
    """A 'pretrained' EfficientNet (timm's test_efficientnet, BatchNorm throughout) saved to a file:
    trained on digits 0-4 at 32 px, as a backbone is pretrained at another size on other classes."""
    from safetensors.torch import save_file

    stage = StageConfig(model="test_efficientnet", img_size=32, in_chans=1, epochs=6, batch_size=32, lr=5e-3,
                        workers=0)
    model, _ = create_model(stage, FIVE)
    train_loader, val_loader = _digits_loaders(stage, upper=False, rows=600)
    result = fit(model, train_loader, val_loader, stage,
                 build_layout_loss(FIVE, [single_loss(stage)], ["coarse"], train_loader.dataset.targets))
    assert result.best_value > 0.8  # chance is 0.2: the backbone has learnt features
    path = tmp_path_factory.mktemp("pretrained") / "digits.safetensors"
    model.load_state_dict(result.best_state)
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(path))
    return path


def _unfreeze_losses(weights, batchnorm: str) -> list[float]:
    """Fine-tuning on digits 5-9 at 16 px from `weights`: 2 head-only epochs, then one unfrozen."""
    stage = StageConfig(model="test_efficientnet", img_size=16, in_chans=1, epochs=3, freeze_epochs=2, batch_size=16,
                        lr=3e-3, warmup_epochs=0, workers=0, weights=str(weights), batchnorm=batchnorm)
    model, _ = create_model(stage, FIVE)
    train_loader, val_loader = _digits_loaders(stage, upper=True, rows=160)
    result = fit(model, train_loader, val_loader, stage,
                 build_layout_loss(FIVE, [single_loss(stage)], ["coarse"], train_loader.dataset.targets))
    return [entry["train_loss"] for entry in result.history]


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_the_unfreeze_is_clean_the_loss_does_not_jump(digits_weights, batchnorm):
    """From a weights file, 2 head-only epochs then unfrozen: the first unfrozen epoch's training
    loss is at most 10 % above the last frozen one's, whether BatchNorm keeps its statistics
    throughout or trains them throughout (the frozen epochs included)."""
    losses = _unfreeze_losses(digits_weights, batchnorm)
    assert losses[2] <= 1.1 * losses[1], losses


def test_the_unfreeze_jumped_where_batchnorm_changed_mode_with_it(digits_weights, monkeypatch):
    """The same fine-tuning as the library did it before: BatchNorm in eval mode while the backbone
    was frozen, training from the unfreeze, and the backbone's first steps at the schedule's full
    rate. The loss jumps: the test above holds the fix, not an easy case."""
    from pathlib import Path

    import hierclf.train.loop as loop
    import hierclf.train.optim as optim

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from finetune_grid import _mode_switching  # the library before issue 43, as the grid's unfreeze round ran it

    monkeypatch.setattr(loop, "_train_mode", _mode_switching)
    monkeypatch.setattr(optim, "UnfreezeWarmup", lambda schedule, *rest: schedule)
    losses = _unfreeze_losses(digits_weights, "train")
    assert losses[2] > 1.25 * losses[1], losses


def _input_dtypes(model: torch.nn.Module) -> list[tuple[bool, torch.dtype]]:
    """(training?, dtype) of what each call of the model's first convolution computed in."""
    seen = []
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda module, args, out: seen.append((module.training, out.dtype)))
    return seen


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 units")
def test_bf16_precision_runs_the_training_steps_in_bf16_validates_in_fp32_and_learns():
    stage = dataclasses.replace(TINY, precision="bf16")
    model, _ = create_model(stage, THREE, seed=stage.seed)
    seen = _input_dtypes(model)
    train_loader, val_loader = loaders(stage)
    result = fit(model, train_loader, val_loader, stage, loss_of(stage, train_loader), seed=stage.seed)
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay fp32
    assert result.val_probs.dtype == np.float32
    assert max(r["val_accuracy"] for r in result.history) >= 0.9  # chance is 1/3


def test_fp32_precision_never_autocasts():
    model, _ = create_model(dataclasses.replace(TINY, epochs=1), THREE, seed=0)
    seen = _input_dtypes(model)
    stage = dataclasses.replace(TINY, epochs=1)
    train_loader, val_loader = loaders(stage)
    fit(model, train_loader, val_loader, stage, loss_of(stage, train_loader))
    assert {dtype for _, dtype in seen} == {torch.float32}


def test_bf16_precision_is_refused_in_one_line_on_a_cpu_without_bf16_units(monkeypatch):
    monkeypatch.setattr("hierclf.runtime.devices.cpu_has_bf16", lambda: False)
    stage = dataclasses.replace(TINY, precision="bf16", epochs=1)
    with pytest.raises(HierclfError, match=r'precision = "bf16": this CPU has no bf16 units .*use "fp32"'):
        train(stage)
