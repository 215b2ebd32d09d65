"""The combiner registry: every combiner's arithmetic on hand-made probabilities."""
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from hierclf.combine.combiners import COMBINERS, Flat, Product, Routed, Stacking, StageOutputs, stacking_features
from hierclf.hierarchy.kinds import FactorHierarchy, GroupHierarchy
from hierclf.recipe.schema import CombineConfig

FIVE = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))


def random_probs(rng, rows, columns):
    values = rng.random((rows, columns)) + 0.01
    return values / values.sum(1, keepdims=True)


def outputs(seed: int = 1, rows: int = 200) -> StageOutputs:
    rng = np.random.default_rng(seed)
    return StageOutputs(random_probs(rng, rows, 4), {"odd": random_probs(rng, rows, 2)}, rng.integers(0, 5, size=rows))


def test_one_registry_names_every_combiner_and_the_recipe_takes_its_names():
    assert list(COMBINERS) == ["flat", "product", "routed", "stacking", "blend"]
    assert [cls.name for cls in COMBINERS.values()] == list(COMBINERS)
    config = CombineConfig(route_threshold=0.3, stacking_c=0.5)
    assert COMBINERS["routed"].from_config(config).threshold == 0.3
    assert COMBINERS["stacking"].from_config(config).c == 0.5
    assert [name for name, cls in COMBINERS.items() if cls.fits] == ["stacking", "blend"]


def test_flat_product_and_routed_combine_without_fitting():
    data = outputs()
    runner = data.run_specialist
    flat = Flat().combine(GroupHierarchy(("a", "b", "c", "d")), data.coarse_probs, [], runner)
    assert flat.probs is data.coarse_probs and np.array_equal(flat.labels, data.coarse_probs.argmax(1))
    product = Product().fit(FIVE, data).combine(FIVE, data.coarse_probs, ["odd"], runner)
    assert np.array_equal(product.probs, FIVE.product(data.coarse_probs, data.specialist_probs))
    assert len(product.ran_on["odd"]) == 200
    routed = Routed(threshold=0.0).combine(FIVE, data.coarse_probs, ["odd"], runner)
    assert np.array_equal(routed.labels, FIVE.route(data.coarse_probs, runner).labels)
    assert len(routed.ran_on["odd"]) == int((data.coarse_probs.argmax(1) == 1).sum())


def test_product_with_heads_is_the_heads_product():
    factors = FactorHierarchy.from_config({"a": 2, "b": 3})
    rng = np.random.default_rng(0)
    coarse = np.concatenate([rng.dirichlet(np.ones(2), 10), rng.dirichlet(np.ones(3), 10)], axis=1)
    specialist = rng.dirichlet(np.ones(3), 10)
    combined = Product().combine(factors, coarse, ["b"], lambda name, rows: specialist[rows])
    assert np.allclose(combined.probs, np.einsum("na,nb->nab", coarse[:, :2], specialist).reshape(10, 6))


def test_stacking_matches_scikit_learn_and_its_state_round_trips_through_json():
    data = outputs()
    features = stacking_features(data.coarse_probs, [data.specialist_probs["odd"]])
    assert features.shape == (200, 6)
    combiner = Stacking(c=0.5).fit(FIVE, data)
    reference = LogisticRegression(C=0.5, max_iter=2000).fit(features, data.labels)
    assert np.allclose(combiner.predict_proba(features), reference.predict_proba(features), atol=1e-6)
    combined = combiner.combine(FIVE, data.coarse_probs, ["odd"], data.run_specialist)
    assert np.allclose(combined.probs, reference.predict_proba(features), atol=1e-6)
    state = json.loads(json.dumps(combiner.state()))
    again = Stacking(c=0.5).load_state(state, "combiner.json")
    assert np.array_equal(again.predict_proba(features), combiner.predict_proba(features))
    assert combiner.settings() == {"c": 0.5}


def test_stacking_binary_and_missing_classes():
    rng = np.random.default_rng(2)
    coarse = rng.dirichlet(np.ones(4), size=60)
    labels = np.where(coarse[:, 0] > 0.25, 4, 1)  # only two of five classes seen
    combiner = Stacking().fit(FIVE, StageOutputs(coarse, {}, labels))
    features = stacking_features(coarse, [])
    probs = combiner.predict_proba(features)
    reference = LogisticRegression(max_iter=2000).fit(features, labels).predict_proba(features)
    assert probs.shape == (60, 5) and np.allclose(probs[:, [1, 4]], reference, atol=1e-6)
    assert np.allclose(probs[:, [0, 2, 3]], 0)


def test_a_corrupt_stacking_state_is_refused():
    from hierclf.errors import RunError

    with pytest.raises(RunError, match="combiner.json is not a stacking combiner"):
        Stacking().load_state({"coef": "x"}, "combiner.json")


def test_blend_weighs_the_flat_model_against_the_specialist_by_out_of_fold_log_loss():
    from hierclf.combine.combiners import Blend

    over_flat = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"), flat_coarse=True)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 400)
    flat = random_probs(rng, 400, 5)
    in_group = np.where(labels == 3, 1, 0)
    knowing = np.stack([1 - in_group, in_group], axis=1) * 0.9 + 0.05  # right on every group row
    noise = random_probs(rng, 400, 2)
    assert Blend().fit(over_flat, StageOutputs(flat, {"odd": knowing}, labels)).weights == {"odd": 0.0}
    # a specialist that knows nothing gets no weight: the flat model's own distribution is kept
    flat_knowing = flat.copy()
    flat_knowing[:, [1, 3]] = np.stack([1 - in_group, in_group], axis=1) * 0.9 * flat[:, [1, 3]].sum(1, keepdims=True) \
        + 0.05 * flat[:, [1, 3]].sum(1, keepdims=True)
    fitted = Blend().fit(over_flat, StageOutputs(flat_knowing, {"odd": noise}, labels))
    assert fitted.weights == {"odd": 1.0}
    combined = fitted.combine(over_flat, flat_knowing, ["odd"], lambda name, rows: noise[rows])
    assert np.allclose(combined.probs, flat_knowing)
    # in between, the weight minimises the group rows' log-loss on the grid; the state is JSON
    half = 0.5 * knowing + 0.5 * noise
    blend = Blend().fit(over_flat, StageOutputs(flat, {"odd": half}, labels))
    rows = np.isin(labels, [1, 3])
    target = (labels[rows] == 3).astype(int)

    def loss(w):
        mixed = np.exp(w * np.log(over_flat.within(flat[rows], "odd")) + (1 - w) * np.log(half[rows]))
        mixed /= mixed.sum(1, keepdims=True)
        return -np.log(mixed[np.arange(rows.sum()), target]).mean()
    assert loss(blend.weights["odd"]) <= min(loss(w) for w in np.linspace(0, 1, 21)) + 1e-12
    restored = Blend().load_state(json.loads(json.dumps(blend.state())), "combiner.json")
    assert restored.weights == blend.weights
    with pytest.raises(Exception, match="not a blend combiner"):
        Blend().load_state({"weights": 3}, "combiner.json")
