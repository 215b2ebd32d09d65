"""Mixup and CutMix (timm's) for any output layout: one λ for every block."""
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from hierclf.hierarchy.layout import OutputLayout
from hierclf.recipe.schema import HeadConfig, MixConfig
from hierclf.train.losses import build_layout_loss
from hierclf.train.mixing import BatchMixer, build_mixer

MIXUP = MixConfig(mixup_alpha=1.0)
THREE = OutputLayout.single(("a", "b", "c"))


def test_mixup_targets_sum_to_one_and_mix_the_reversed_rows():
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 4, 4).clone()
    original = images.clone()
    targets = torch.tensor([[0], [1], [2], [0], [1], [2]])
    mixed_images, soft = BatchMixer(MIXUP, THREE, seed=0)(images, targets)
    assert torch.allclose(soft.sum(1), torch.ones(6))
    lam = float(soft[0, 0])  # row 0 (class 0) is mixed with row 5 (class 2)
    assert 0 < lam < 1
    for row in range(6):
        partner = 5 - row
        expected = lam * F.one_hot(targets[row, 0], 3) + (1 - lam) * F.one_hot(targets[partner, 0], 3)
        assert torch.allclose(soft[row], expected.float(), atol=1e-6)
        assert torch.allclose(mixed_images[row], lam * original[row] + (1 - lam) * original[partner], atol=1e-5)


def test_the_mixers_draws_repeat_from_its_seed_and_leave_numpy_alone():
    def lam(seed):
        return float(BatchMixer(MIXUP, THREE, seed)(torch.zeros(2, 1, 2, 2), torch.tensor([[0], [1]]))[1][0, 0])
    np.random.seed(11)
    expected_next = np.random.rand()
    np.random.seed(11)
    assert lam(5) == lam(5) != lam(6)
    assert np.random.rand() == expected_next


def test_cutmix_pastes_a_box_and_mixes_by_its_area():
    images = torch.zeros(4, 1, 16, 16)
    images[2:] = 1.0
    config = MixConfig(cutmix_alpha=1.0)
    _, soft = BatchMixer(config, OutputLayout.single(("a", "b")), seed=0)(images, torch.tensor([[0], [0], [1], [1]]))
    pasted = float(images[0].mean())  # the share of row 0 that now comes from row 3
    assert 0 < pasted < 1 and torch.allclose(soft[0], torch.tensor([1 - pasted, pasted]), atol=1e-6)


def test_mixup_with_heads_mixes_every_head_with_the_same_lambda():
    layout = OutputLayout.of_heads([("mask", "abc"), ("gender", "ab")])
    targets = torch.tensor([[0, 1], [2, 0], [1, 1], [2, 1]])
    _, soft = BatchMixer(MIXUP, layout, seed=2)(torch.zeros(4, 1, 2, 2), targets)
    mask, gender = soft.split((3, 2), 1)
    assert torch.allclose(mask.sum(1), torch.ones(4)) and torch.allclose(gender.sum(1), torch.ones(4))
    lam = float(mask[0, 0])  # row 0 (mask 0, gender 1) with row 3 (mask 2, gender 1)
    assert torch.allclose(mask[0], torch.tensor([lam, 0.0, 1 - lam]), atol=1e-6)
    assert torch.allclose(gender[0], torch.tensor([0.0, 1.0]), atol=1e-6)
    assert torch.allclose(gender[1], torch.tensor([lam, 1 - lam]), atol=1e-6)  # row 1 (gender 0) with row 2 (1)
    loss = build_layout_loss(layout, [HeadConfig(), HeadConfig(label_smoothing=0.1)], ["a", "b"], targets.numpy())
    assert torch.isfinite(loss(torch.randn(4, 5), soft))


def test_an_odd_last_row_stays_itself_and_no_mixing_means_no_mixer():
    _, soft = BatchMixer(MIXUP, THREE, seed=0)(torch.zeros(3, 1, 2, 2), torch.tensor([[0], [1], [2]]))
    assert soft[2].tolist() == [0.0, 0.0, 1.0]
    assert build_mixer(MixConfig(), THREE, 0) is None
    assert build_mixer(dataclasses.replace(MIXUP, mixup_alpha=0.0, cutmix_alpha=0.5), THREE, 0) is not None
