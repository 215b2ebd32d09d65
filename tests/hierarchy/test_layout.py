"""Output layouts: one block or several, read the same way everywhere."""
import numpy as np
import pytest
import torch

from hierclf.data.labels import encode_factors
from hierclf.hierarchy.layout import Block, OutputLayout

HEADS = OutputLayout.of_heads([("mask", ("wear", "incorrect", "none")), ("gender", ("m", "f")),
                               ("age", ("young", "middle", "old"))])
ONE = OutputLayout.single(("a", "b", "c", "d"))


def test_sizes_names_and_the_model_json_form_round_trip():
    assert (HEADS.sizes, HEADS.width, HEADS.num_joint) == ((3, 2, 3), 8, 18)
    assert HEADS.output_names[:4] == ("mask=wear", "mask=incorrect", "mask=none", "gender=m")
    assert (ONE.sizes, ONE.width, ONE.num_joint, ONE.output_names) == ((4,), 4, 4, ("a", "b", "c", "d"))
    for layout in (HEADS, ONE):
        fields = layout.spec_fields()
        assert OutputLayout.from_spec_fields(fields["class_names"], fields["heads"]) == layout
    assert ONE.spec_fields()["heads"] == [] and HEADS.spec_fields()["heads"] == [["mask", 3], ["gender", 2], ["age", 3]]
    assert ONE.blocks == (Block("", ("a", "b", "c", "d")),)


def test_the_joint_class_is_the_mixed_radix_number_in_numpy_and_torch():
    values = np.array([(m, g, a) for m in range(3) for g in range(2) for a in range(3)])
    assert HEADS.joint(values).tolist() == encode_factors(values, (3, 2, 3)).tolist() == list(range(18))
    assert HEADS.joint(torch.as_tensor(values)).tolist() == list(range(18))
    assert ONE.joint(np.array([[2], [0]])).tolist() == [2, 0]  # one block: the class itself


def test_targets_are_stored_as_every_run_has_stored_them():
    assert ONE.stored(np.array([[1], [3]])).tolist() == [1, 3]
    assert HEADS.stored(np.array([[1, 0, 2]])).tolist() == [[1, 0, 2]]
    assert OutputLayout.columns(np.array([1, 3])).tolist() == [[1], [3]]
    assert OutputLayout.columns(np.array([[1, 0, 2]])).tolist() == [[1, 0, 2]]


def test_softmax_is_per_block_and_one_block_is_plain_softmax():
    logits = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    probs = HEADS.softmax(logits)
    for block in probs.split((3, 2, 3), 1):
        assert torch.allclose(block.sum(1), torch.ones(5))
    assert torch.allclose(probs[:, 3:5], torch.softmax(logits[:, 3:5], 1))
    assert torch.equal(ONE.softmax(logits[:, :4]), torch.softmax(logits[:, :4], 1))


def test_correct_counts_rows_with_every_block_right():
    logits = torch.tensor([[5.0, 0, 0, 0, 5, 0, 0, 5], [5.0, 0, 0, 0, 5, 5, 0, 0]])
    targets = torch.tensor([[0, 1, 2], [0, 1, 2]])
    assert HEADS.correct(logits, targets) == 1  # the second row's age is wrong
    assert ONE.correct(logits[:, :4], targets[:, :1]) == 2


def test_scores_are_the_joint_classs_with_each_blocks_beside_them():
    rng = np.random.default_rng(0)
    targets = np.stack([rng.integers(0, size, 40) for size in (3, 2, 3)], 1)
    probs = rng.dirichlet(np.ones(8), size=40)
    result = HEADS.scores(targets, probs)
    predicted = HEADS.predicted(probs)
    assert result["accuracy"] == pytest.approx((predicted == targets).all(1).mean())
    assert result["heads"]["gender"]["accuracy"] == pytest.approx((predicted[:, 1] == targets[:, 1]).mean())
    single = ONE.scores(targets[:, :1] % 4, probs[:, :4])
    assert "heads" not in single
    assert single["accuracy"] == pytest.approx((probs[:, :4].argmax(1) == targets[:, 0] % 4).mean())


def test_log_loss_sums_each_blocks_mean_negative_log_probability():
    probs = np.array([[0.5, 0.25, 0.25, 0.1, 0.9, 1.0, 0.0, 0.0]])
    expected = -np.log(0.25) - np.log(0.9) - np.log(1e-12)  # a zero probability is clipped
    assert HEADS.log_loss(np.array([[1, 1, 2]]), probs) == pytest.approx(expected)


def test_marginals_of_a_joint_distribution_are_each_blocks_target():
    joint = torch.zeros(1, 18)
    joint[0, 15] = 0.25  # not_wear/f/young: 2·6 + 1·3 + 0
    joint[0, 2] = 0.75  # wear/m/old
    marginals = HEADS.marginals(joint)
    assert marginals[0].tolist() == pytest.approx([0.75, 0, 0.25, 0.75, 0.25, 0.25, 0, 0.75])
    assert torch.equal(ONE.marginals(joint[:, :4]), joint[:, :4])  # one block: the distribution itself
