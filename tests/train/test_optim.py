"""The optimiser and its schedule, by timm's factories, stepped per update."""
import dataclasses

import numpy as np
import pytest
import torch

from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.factory import classifier_modules, create_model
from hierclf.recipe.schema import StageConfig, TrainConfig
from hierclf.train.optim import build_optimizer, build_scheduler


def lrs(stage: TrainConfig, epochs: int, metric=lambda epoch: 1.0, updates_per_epoch: int = 1):
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
    stage = TrainConfig(scheduler="cosine_restarts", lr=1e-3, restart_epochs=10, restart_mult=2, min_lr=1e-6,
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
    step = lrs(TrainConfig(scheduler="step", lr=1.0, step_epochs=3, decay_rate=0.5), 7)
    assert np.allclose(step, [1, 1, 1, 0.5, 0.5, 0.5, 0.25])
    # plateau: a metric that stops improving decays the rate once patience runs out
    plateau = lrs(TrainConfig(scheduler="plateau", lr=1.0, plateau_patience=1, decay_rate=0.1, min_lr=0), 6,
                  metric=lambda epoch: min(epoch, 1))
    assert np.allclose(plateau, [1, 1, 1, 1, 0.1, 0.1])
    warm_plateau = lrs(TrainConfig(scheduler="plateau", lr=1.0, warmup_epochs=2, warmup_lr=0.0), 3,
                       metric=lambda epoch: epoch)
    assert np.allclose(warm_plateau, [0, 0.5, 1])
    warm = lrs(TrainConfig(scheduler="cosine", lr=1.0, warmup_epochs=2, warmup_lr=0.01, epochs=10), 4)
    assert warm[0] == pytest.approx(0.01) and warm[2] > 0.9
    assert np.allclose(lrs(TrainConfig(scheduler="none", lr=0.3), 3), 0.3)
    # stepped per update: a one-epoch warm-up ramps up inside the first epoch
    optimizer = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(lr=1.0))
    scheduler = build_scheduler(optimizer, TrainConfig(lr=1.0, warmup_epochs=1, warmup_lr=0.0, epochs=5), 10)
    seen = []
    for update in range(1, 11):
        scheduler.step_update(update)
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen[4] == pytest.approx(0.5)
    assert seen[-1] == pytest.approx(0.5 * (1 + np.cos(np.pi * 10 / 50)))  # timm: the cosine clock includes warm-up
    cosine = lrs(TrainConfig(scheduler="cosine", lr=1.0, min_lr=0.0, epochs=4), 4, updates_per_epoch=10)
    assert np.allclose(cosine, 0.5 * (1 + np.cos(np.pi * np.arange(4) / 4)))
    sgd = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8


def test_sgd_with_momentum_zero_is_plain_sgd():
    model = torch.nn.Linear(4, 2)
    plain = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.0)).param_groups[0]
    nesterov = build_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.9)).param_groups[0]
    assert (plain["momentum"], plain["nesterov"]) == (0.0, False)
    assert (nesterov["momentum"], nesterov["nesterov"]) == (0.9, True)


def test_backbone_lr_gives_the_backbone_its_own_rate():
    stage = TrainConfig(backbone_lr=0.1, lr=1e-3)
    model, _ = create_model(StageConfig(model="test_resnet", in_chans=1), OutputLayout.single(("a", "b", "c")))
    optimizer = build_optimizer(model, stage)
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    for group in optimizer.param_groups:
        is_head = {id(p) in head_ids for p in group["params"]}
        assert len(is_head) == 1
        assert group["lr"] == pytest.approx(1e-3 if is_head.pop() else 1e-4)
    decayed = [group["weight_decay"] for group in optimizer.param_groups]
    assert 0.0 in decayed and stage.weight_decay in decayed  # timm's no-decay split survives
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("heads", [False, True])
def test_layer_decay_gives_each_lower_layer_a_smaller_share(heads):
    """test_efficientnet's timm layer groups from the stem (0) to the last convolution (5): layer k
    trains at lr × backbone_lr × decay^(5 − k); the classifiers at lr, whatever the layout."""
    from timm.models import group_parameters
    layout = (OutputLayout.of_heads([("a", ("0", "1")), ("b", ("0", "1", "2"))]) if heads
              else OutputLayout.single(("a", "b", "c")))
    model, _ = create_model(StageConfig(model="test_efficientnet"), layout)
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2, backbone_lr=0.5, layer_decay=0.5))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    backbone = model.backbone if heads else model
    layers = group_parameters(backbone, backbone.group_matcher(coarse=False), reverse=True)
    named = dict(backbone.named_parameters())
    heads_ids = {id(p) for module in classifier_modules(model) for p in module.parameters()}
    for name, layer in layers.items():
        if id(named[name]) not in heads_ids:
            assert rate[id(named[name])] == pytest.approx(1e-2 * 0.5 * 0.5 ** (5 - layer)), name
    assert all(rate[i] == pytest.approx(1e-2) for i in heads_ids) and len(heads_ids) == (4 if heads else 2)
    assert len(rate) == len(list(model.parameters()))


def test_lr_base_batch_scales_the_rate_to_the_step_only_when_the_recipe_asks():
    linear = torch.nn.Linear(2, 2)
    assert build_optimizer(linear, TrainConfig(lr=0.1), images_per_step=512).param_groups[0]["lr"] == 0.1
    sgd = TrainConfig(optimizer="sgd", lr=0.1, lr_base_batch=128)
    assert build_optimizer(linear, sgd, images_per_step=512).param_groups[0]["lr"] == pytest.approx(0.4)  # linear
    adamw = TrainConfig(lr=1e-3, lr_base_batch=128)
    assert build_optimizer(linear, adamw, images_per_step=512).param_groups[0]["lr"] == pytest.approx(2e-3)  # sqrt
    model, _ = create_model(StageConfig(model="test_resnet", in_chans=1), OutputLayout.single(("a", "b", "c")))
    halved = dataclasses.replace(adamw, backbone_lr=0.5)
    rates = sorted({round(group["lr"], 9) for group in build_optimizer(model, halved, 32).param_groups})
    assert rates == [2.5e-4, 5e-4]  # the head at the scaled rate, the backbone at half of it


@pytest.mark.parametrize("scheduler", ["cosine", "plateau", "none"])
def test_after_the_head_only_epochs_the_backbone_warms_up_from_zero_over_one_epoch(scheduler):
    """freeze_epochs = 2, 4 updates an epoch: from the first unfrozen update the backbone's rate is
    1/4, 2/4, 3/4 of the schedule's, then all of it; the head's is the schedule's throughout, and
    the schedule under it never sees the ramped rates (a resumed schedule ramps alike)."""
    model, _ = create_model(StageConfig(model="test_resnet", in_chans=1), OutputLayout.single(("a", "b", "c")))
    stage = TrainConfig(lr=0.1, freeze_epochs=2, epochs=6, scheduler=scheduler, min_lr=0.0)
    plain = dataclasses.replace(stage, freeze_epochs=0)
    optimizer = build_optimizer(model, stage, unfreezes=True)
    reference = build_optimizer(model, plain, unfreezes=True)  # the same groups, no ramp
    schedule, unramped = build_scheduler(optimizer, stage, 4), build_scheduler(reference, plain, 4)
    assert {group["backbone"] for group in optimizer.param_groups} == {True, False}
    shares = []
    for update in range(1, 21):
        for each in (schedule, unramped):
            if each is not None:
                each.step_update(update)
        if update % 4 == 0:
            for each in (schedule, unramped):
                if each is not None:
                    each.step(update // 4, 1.0)
        for group, plain_group in zip(optimizer.param_groups, reference.param_groups):
            if not group["backbone"]:
                assert group["lr"] == pytest.approx(plain_group["lr"])
            elif plain_group["lr"]:
                shares.append(round(group["lr"] / plain_group["lr"], 6))
    per_update = shares[::len(shares) // 20]
    assert per_update[:12] == [0.0] * 7 + [0.25, 0.5, 0.75, 1.0, 1.0]  # update 8 ends the frozen epochs
    assert set(per_update[12:]) == {1.0}
    state = schedule.state_dict()
    again = build_scheduler(build_optimizer(model, stage, unfreezes=True), stage, 4)
    again.load_state_dict(state)
    assert again.updates == 20
