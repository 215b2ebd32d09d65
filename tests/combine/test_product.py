"""The product rule over a hierarchy's terms: exact for groups and for attribute heads."""
import numpy as np

from hierclf.combine.base import StageOutputs
from hierclf.combine.product import Flat, Product, product
from hierclf.hierarchy.factors import FactorHierarchy
from hierclf.hierarchy.groups import GroupHierarchy

FIVE = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))
FIVE_OVER_FLAT = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"), flat_coarse=True)
MASK = FactorHierarchy.from_config({"mask": ["wear", "incorrect", "not_wear"], "gender": 2, "age": 3})


def random_probs(rng, rows, columns):
    values = rng.random((rows, columns)) + 0.01
    return values / values.sum(1, keepdims=True)


def test_product_is_group_times_conditional_and_sums_to_one():
    rng = np.random.default_rng(0)
    coarse, odd = random_probs(rng, 50, 4), random_probs(rng, 50, 2)
    fine = product(FIVE, coarse, {"odd": odd})
    assert np.allclose(fine.sum(1), 1.0)
    assert np.allclose(fine[:, [0, 2, 4]], coarse[:, [0, 2, 3]])
    assert np.allclose(fine[:, 1], coarse[:, 1] * odd[:, 0]) and np.allclose(fine[:, 3], coarse[:, 1] * odd[:, 1])


def test_over_a_flat_run_the_product_sums_each_group_first():
    rng = np.random.default_rng(0)
    flat = random_probs(rng, 50, 5)
    grouped, within = FIVE_OVER_FLAT.coarse_terms(flat)
    specialist = {"odd": random_probs(rng, 50, 2)}
    # with the specialist's own distribution it is the product over a coarse model's outputs
    assert np.allclose(product(FIVE_OVER_FLAT, flat, specialist), product(FIVE, grouped, specialist))
    # with the flat model's own within-group distribution it gives the flat model back
    assert np.allclose(product(FIVE_OVER_FLAT, flat, {"odd": within}), flat)


def test_with_heads_the_product_is_the_heads_outer_product_a_specialist_replacing_its_head():
    rng = np.random.default_rng(0)
    heads = {name: rng.dirichlet(np.ones(size), size=5) for name, size in zip(("mask", "gender", "age"), (3, 2, 3))}
    side_by_side = np.concatenate([heads["mask"], heads["gender"], heads["age"]], axis=1)
    joint = product(MASK, side_by_side, {})
    assert joint.shape == (5, 18) and np.allclose(joint.sum(1), 1.0)
    for label, (mask, gender, age) in enumerate(MASK.decode(np.arange(18))):
        assert np.allclose(joint[:, label], heads["mask"][:, mask] * heads["gender"][:, gender] * heads["age"][:, age])
    age = rng.dirichlet(np.ones(3), size=5)
    expected = np.einsum("nm,ng,na->nmga", heads["mask"], heads["gender"], age).reshape(5, 18)
    assert np.allclose(product(MASK, side_by_side, {"age": age}), expected)


def test_flat_and_product_combine_without_fitting():
    rng = np.random.default_rng(1)
    data = StageOutputs(random_probs(rng, 200, 4), {"odd": random_probs(rng, 200, 2)}, rng.integers(0, 5, 200))
    flat = Flat().combine(GroupHierarchy(("a", "b", "c", "d")), data.coarse_probs, [], data.run_specialist)
    assert np.array_equal(flat.probs, data.coarse_probs) and np.array_equal(flat.labels, data.coarse_probs.argmax(1))
    combined = Product().fit(FIVE, data).combine(FIVE, data.coarse_probs, ["odd"], data.run_specialist)
    assert np.array_equal(combined.probs, product(FIVE, data.coarse_probs, data.specialist_probs))
    assert len(combined.ran_on["odd"]) == 200
