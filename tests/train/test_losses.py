"""Losses by recipe key: focal, class weights, smoothing, soft (mixed) targets, and the weighted
sum over an output's blocks."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hierclf.errors import RecipeError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.recipe.schema import HeadConfig, LossConfig
from hierclf.train.losses import FocalLoss, LayoutLoss, build_layout_loss, build_loss, class_weight_tensor

HEADS = OutputLayout.of_heads([("mask", "abc"), ("gender", "ab"), ("age", "abc")])


@pytest.fixture()
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(32, 5, generator=generator), torch.randint(0, 5, (32,), generator=generator)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(batch, smoothing, weighted):
    logits, targets = batch
    weight = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.0]) if weighted else None
    expected = F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)
    assert torch.allclose(FocalLoss(0.0, weight, smoothing)(logits, targets), expected, atol=1e-6)


def test_focal_down_weights_easy_examples():
    targets = torch.tensor([0, 0])
    easy, hard = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([[0.2, 0.0, 0.0]])
    focal, plain = FocalLoss(2.0), torch.nn.CrossEntropyLoss()
    ratio_easy = focal(easy, targets[:1]) / plain(easy, targets[:1])
    ratio_hard = focal(hard, targets[:1]) / plain(hard, targets[:1])
    assert ratio_easy < 0.01 and ratio_hard > 0.3  # (1 − p)² with p ≈ 0.96 and p ≈ 0.38


def test_balanced_class_weights_follow_inverse_frequency():
    targets = np.array([0] * 6 + [1] * 3 + [2] * 1)
    weights = class_weight_tensor(LossConfig(class_weights="balanced"), targets, 4, "coarse")
    # n / (k · count) over the classes present; a class without training rows keeps 1
    assert torch.allclose(weights, torch.tensor([10 / 18, 10 / 9, 10 / 3, 1.0]))
    given = class_weight_tensor(LossConfig(class_weights=(1.0, 2.0, 3.0, 4.0)), targets, 4, "coarse")
    assert given.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert class_weight_tensor(LossConfig(), targets, 4, "coarse") is None
    with pytest.raises(RecipeError, match="fine.x.class_weights has 2 numbers for 4 classes"):
        class_weight_tensor(LossConfig(class_weights=(1.0, 2.0)), targets, 4, "fine.x")


def test_weighted_cross_entropy_is_wired(batch):
    logits, targets = batch
    loss = build_loss(LossConfig(class_weights=(0.0, 0.0, 0.0, 0.0, 1.0)), targets.numpy(), 5, "coarse")
    only_last = targets == 4
    assert torch.allclose(loss(logits, targets), F.cross_entropy(logits[only_last], targets[only_last]))
    assert isinstance(build_loss(LossConfig(loss="focal"), targets.numpy(), 5, "coarse"), FocalLoss)


def test_the_layout_loss_is_the_weighted_sum_of_each_blocks_own_loss():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 3 + 2 + 3, generator=generator)
    targets = torch.stack([torch.randint(0, size, (16,), generator=generator) for size in (3, 2, 3)], 1)
    settings = (HeadConfig(weight=1.0), HeadConfig(weight=0.5),
                HeadConfig(label_smoothing=0.3, weight=2.0, weight_schedule=((3, 0.0),)))
    loss = build_layout_loss(HEADS, settings, ("heads.mask", "heads.gender", "heads.age"), targets.numpy())
    mask, gender, age = logits.split((3, 2, 3), 1)
    per_head = [F.cross_entropy(mask, targets[:, 0]), F.cross_entropy(gender, targets[:, 1]),
                F.cross_entropy(age, targets[:, 2], label_smoothing=0.3)]
    assert torch.allclose(loss(logits, targets), per_head[0] + 0.5 * per_head[1] + 2.0 * per_head[2])
    loss.set_epoch(3)  # the schedule turns age off from epoch 3
    assert torch.allclose(loss(logits, targets), per_head[0] + 0.5 * per_head[1])


def test_one_block_costs_exactly_its_own_loss(batch):
    logits, targets = batch
    setting = HeadConfig(loss="focal", label_smoothing=0.1)
    loss = build_layout_loss(OutputLayout.single("abcde"), [setting], ["coarse"], targets.numpy()[:, None])
    plain = build_loss(setting, targets.numpy(), 5, "coarse")
    assert torch.equal(loss(logits, targets[:, None]), plain(logits, targets))
    with pytest.raises(RecipeError, match="heads.age.class_weights has 2 numbers for 3 classes"):
        build_layout_loss(HEADS, [HeadConfig(), HeadConfig(), HeadConfig(class_weights=(1.0, 2.0))],
                          ["heads.mask", "heads.gender", "heads.age"], np.zeros((4, 3), dtype=np.int64))


def test_a_block_with_weight_zero_gets_no_gradient():
    logits = torch.randn(8, 5, requires_grad=True)
    targets = torch.stack([torch.randint(0, 3, (8,)), torch.randint(0, 2, (8,))], 1)
    layout = OutputLayout.of_heads([("a", "abc"), ("b", "ab")])
    loss = LayoutLoss(layout, [torch.nn.CrossEntropyLoss()] * 2, [HeadConfig(), HeadConfig(weight=0.0)])
    loss(logits, targets).backward()
    assert logits.grad[:, :3].abs().sum() > 0 and logits.grad[:, 3:].abs().sum() == 0


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
