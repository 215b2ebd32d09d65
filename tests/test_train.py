import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import shape_image
from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.inference import soft_vote
from hierclf.models import create_model
from hierclf.recipe import StageConfig
from hierclf.train.loop import fit, seed_everything
from hierclf.train.optim import build_optimizer, build_scheduler

CPU = torch.device("cpu")


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
        out.append(make_loader(dataset, stage.batch_size, shuffle=training, workers=0, device=CPU))
    return out


def train(stage: StageConfig, tmp_path=None):
    seed_everything(stage.seed)
    model, _ = create_model(stage, ("left", "middle", "right"))
    train_loader, val_loader = loaders(stage)
    metrics = None if tmp_path is None else tmp_path / "metrics.jsonl"
    return model, val_loader, fit(model, train_loader, val_loader, stage, CPU, num_classes=3, metrics_path=metrics)


TINY = StageConfig(model="test_resnet", img_size=16, in_chans=1, epochs=8, batch_size=16, lr=5e-3, workers=0)


def test_fit_learns_keeps_the_best_epoch_and_logs(tmp_path):
    model, val_loader, result = train(TINY, tmp_path)
    best = result.history[result.best_epoch - 1]
    assert best["val_accuracy"] >= 0.9  # chance is 1/3
    assert best["val_macro_f1"] == max(r["val_macro_f1"] for r in result.history)
    # the kept weights are the best epoch's: they reproduce its validation probabilities
    model.load_state_dict(result.best_state)
    probs, rows = soft_vote([model], val_loader, CPU)
    assert np.allclose(probs, result.val_probs, atol=1e-5) and np.array_equal(rows, result.val_rows)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == TINY.epochs
    assert {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr",
            "seconds"} <= set(lines[0])


def test_early_stopping_with_patience_and_min_delta():
    stage = StageConfig(**{**TINY.__dict__, "lr": 1e-9, "patience": 2, "min_delta": 0.5, "epochs": 20})
    _, _, result = train(stage)
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_same_seed_same_run():
    stage = StageConfig(**{**TINY.__dict__, "epochs": 2, "augment": "light"})
    first, second = train(stage)[2], train(stage)[2]
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(first.history) == strip(second.history)


def lrs(stage: StageConfig, epochs: int, metric=lambda epoch: 1.0, updates_per_epoch: int = 1):
    """The learning rate at the start of each epoch, stepping the schedule as `fit` does."""
    optimizer = build_optimizer(torch.nn.Linear(2, 2), stage)
    scheduler = build_scheduler(optimizer, stage, updates_per_epoch)
    seen, updates = [], 0
    for epoch in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        if scheduler is not None:
            for _ in range(updates_per_epoch):
                updates += 1
                scheduler.step_update(updates)
            scheduler.step(epoch + 1, metric(epoch))
    return np.array(seen)


def test_cosine_restarts_match_pytorch_sgdr():
    stage = StageConfig(scheduler="cosine_restarts", lr=1e-3, restart_epochs=10, restart_mult=2, min_lr=1e-6,
                        epochs=40)
    ours = lrs(stage, 40)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    reference = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=2, eta_min=1e-6)
    expected = []
    for _ in range(40):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert np.allclose(ours, expected, rtol=1e-6)
    assert ours[10] == ours[30] == pytest.approx(1e-3)  # restarts after 10, then after 20 more


def test_step_plateau_warmup_and_none():
    step = lrs(StageConfig(scheduler="step", lr=1.0, step_epochs=3, decay_rate=0.5), 7)
    assert np.allclose(step, [1, 1, 1, 0.5, 0.5, 0.5, 0.25])
    # plateau: a metric that stops improving decays the rate once patience runs out
    plateau = lrs(StageConfig(scheduler="plateau", lr=1.0, plateau_patience=1, decay_rate=0.1, min_lr=0), 6,
                  metric=lambda epoch: min(epoch, 1))
    assert np.allclose(plateau, [1, 1, 1, 1, 0.1, 0.1])
    warm_plateau = lrs(StageConfig(scheduler="plateau", lr=1.0, warmup_epochs=2, warmup_lr=0.0), 3,
                       metric=lambda epoch: epoch)
    assert np.allclose(warm_plateau, [0, 0.5, 1])
    warm = lrs(StageConfig(scheduler="cosine", lr=1.0, warmup_epochs=2, warmup_lr=0.01, epochs=10), 4)
    assert warm[0] == pytest.approx(0.01) and warm[2] > 0.9
    assert np.allclose(lrs(StageConfig(scheduler="none", lr=0.3), 3), 0.3)
    # stepped per update: a one-epoch warm-up ramps up inside the first epoch
    optimizer = build_optimizer(torch.nn.Linear(2, 2), StageConfig(lr=1.0))
    scheduler = build_scheduler(optimizer, StageConfig(lr=1.0, warmup_epochs=1, warmup_lr=0.0, epochs=5), 10)
    seen = []
    for update in range(1, 11):
        scheduler.step_update(update)
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen[4] == pytest.approx(0.5)
    assert seen[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 10 / 50)))  # timm: the cosine clock includes warm-up
    cosine = lrs(StageConfig(scheduler="cosine", lr=1.0, min_lr=0.0, epochs=4), 4, updates_per_epoch=10)
    assert np.allclose(cosine, 0.5 * (1 + np.cos(np.pi * np.arange(4) / 4)))
    sgd = build_optimizer(torch.nn.Linear(2, 2), StageConfig(optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8


def test_label_smoothing_keeps_the_training_loss_off_zero():
    """With smoothing ε the best achievable loss is the entropy of the smoothed target, well above 0."""
    plain = train(StageConfig(**{**TINY.__dict__, "epochs": 8}))[2].history[-1]["train_loss"]
    smoothed = train(StageConfig(**{**TINY.__dict__, "epochs": 8, "label_smoothing": 0.3}))[2]
    assert smoothed.history[-1]["train_loss"] > plain + 0.2
    assert smoothed.history[smoothed.best_epoch - 1]["val_accuracy"] >= 0.9  # still learns


def test_a_named_device_that_is_missing_is_a_clear_error():
    from hierclf.devices import resolve_device
    from hierclf.errors import HierclfError

    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(HierclfError, match="no CUDA device is available"):
            resolve_device("cuda")


def _linear_fit(stage: StageConfig, rows: int = 32):
    """One epoch of a BatchNorm-free linear model on fixed rows, in order: the weights it ends with."""
    rng = np.random.default_rng(3)
    labels = np.arange(rows) % 3
    items = Items.from_arrays(np.stack([shape_image(label, rng) for label in labels]), labels)
    transform = build_transform(16, (0.5,), (0.5,))
    train = make_loader(ImageDataset(items, labels, transform, 1), stage.batch_size, shuffle=False, workers=0,
                        device=CPU)
    val = make_loader(ImageDataset(items, labels, transform, 1), 64, shuffle=False, workers=0, device=CPU)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    result = fit(model, train, val, stage, CPU, num_classes=3)
    return before, result.best_state


def test_accumulating_four_batches_of_8_is_one_step_of_32():
    base = dict(epochs=1, optimizer="sgd", momentum=0.0, lr=0.5, weight_decay=0.0, scheduler="none", workers=0)
    start, accumulated = _linear_fit(StageConfig(**base, batch_size=8, accumulate=4))
    _, whole = _linear_fit(StageConfig(**base, batch_size=32))
    _, four_steps = _linear_fit(StageConfig(**base, batch_size=8))
    for key in whole:
        assert torch.allclose(accumulated[key], whole[key], atol=1e-6), key
    assert not torch.allclose(four_steps["1.weight"], whole["1.weight"], atol=1e-4)  # without it: 4 steps
    assert not torch.allclose(start["1.weight"], whole["1.weight"])


@pytest.mark.parametrize("mode", ["norm", "value"])
def test_gradient_clipping_bounds_the_step(mode):
    base = dict(epochs=1, optimizer="sgd", momentum=0.0, lr=1.0, weight_decay=0.0, scheduler="none", workers=0,
                batch_size=32)
    start, free = _linear_fit(StageConfig(**base))
    _, clipped = _linear_fit(StageConfig(**base, clip_grad=1e-3, clip_mode=mode))
    step = torch.cat([(clipped[k] - start[k]).flatten() for k in start])
    free_step = torch.cat([(free[k] - start[k]).flatten() for k in start])
    if mode == "norm":  # one SGD step of lr 1: the step is the clipped gradient
        assert step.norm() <= 1e-3 + 1e-6 < free_step.norm()
    else:
        assert step.abs().max() <= 1e-3 + 1e-6 < free_step.abs().max()


def test_sgd_with_momentum_zero_is_plain_sgd():
    model = torch.nn.Linear(4, 2)
    plain = build_optimizer(model, StageConfig(optimizer="sgd", momentum=0.0)).param_groups[0]
    nesterov = build_optimizer(model, StageConfig(optimizer="sgd", momentum=0.9)).param_groups[0]
    assert (plain["momentum"], plain["nesterov"]) == (0.0, False)
    assert (nesterov["momentum"], nesterov["nesterov"]) == (0.9, True)


def test_compile_and_channels_last_change_speed_not_results():
    base = dict(epochs=2, optimizer="sgd", momentum=0.0, lr=0.5, weight_decay=0.0, scheduler="none", workers=0,
                batch_size=8)
    _, plain = _linear_fit(StageConfig(**base))
    _, compiled = _linear_fit(StageConfig(**base, compile=True))
    for key in plain:  # the compiled module trains the same parameters, and they are what is kept
        assert torch.allclose(compiled[key], plain[key], atol=1e-5), key
    _, _, eager = train(dataclasses.replace(TINY, epochs=2))
    _, _, last = train(dataclasses.replace(TINY, epochs=2, channels_last=True))
    assert np.allclose(eager.val_probs, last.val_probs, atol=3e-3)  # other kernels: rounding, grown by training
