"""The combiners' arithmetic on hand-made probabilities."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from hierclf.combine import Stacking, product, routed, stacking_features
from hierclf.hierarchy import GroupHierarchy

# five classes; coarse classes: 0, {1, 3} = "odd", 2, 4
HIERARCHY = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))


def random_probs(rng, rows, columns):
    values = rng.random((rows, columns)) + 0.01
    return values / values.sum(1, keepdims=True)


def test_coarse_layout():
    assert HIERARCHY.coarse_names == ("a", "odd", "c", "e")
    assert HIERARCHY.coarse_index(HIERARCHY.group("odd")) == 1


def test_product_is_group_times_conditional_and_sums_to_one():
    rng = np.random.default_rng(0)
    coarse, odd = random_probs(rng, 50, 4), random_probs(rng, 50, 2)
    fine = product(HIERARCHY, coarse, {"odd": odd})
    assert np.allclose(fine.sum(1), 1.0)
    assert np.allclose(fine[:, [0, 2, 4]], coarse[:, [0, 2, 3]])
    assert np.allclose(fine[:, 1], coarse[:, 1] * odd[:, 0]) and np.allclose(fine[:, 3], coarse[:, 1] * odd[:, 1])


class CountingSpecialist:
    """Stands in for a specialist's models: answers with fixed probabilities and records every row it sees."""

    def __init__(self, probs):
        self.probs, self.seen = probs, []

    def __call__(self, name, rows):
        self.seen.extend(rows.tolist())
        return self.probs[rows]


def test_routed_runs_the_specialist_only_on_routed_rows():
    coarse = np.array([[0.7, 0.2, 0.05, 0.05],   # → a
                       [0.1, 0.6, 0.2, 0.1],     # → odd → specialist says d
                       [0.2, 0.3, 0.4, 0.1],     # → c (odd at 0.3)
                       [0.05, 0.9, 0.0, 0.05]])  # → odd → specialist says b
    specialist = CountingSpecialist(np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]]))
    outcome = routed(HIERARCHY, coarse, specialist)
    assert sorted(specialist.seen) == [1, 3]
    assert outcome.labels.tolist() == [0, 3, 2, 1]
    assert np.isnan(outcome.specialist_probs["odd"][[0, 2]]).all()
    assert np.allclose(outcome.probs.sum(1), 1.0)
    # with τ = 0.25 it also runs where P(odd) ≥ 0.25 (row 2), and the product decides there
    widened = CountingSpecialist(specialist.probs)
    outcome = routed(HIERARCHY, coarse, widened, threshold=0.25)
    assert sorted(widened.seen) == [1, 2, 3]
    assert outcome.labels[2] == product(HIERARCHY, coarse[2:3], {"odd": specialist.probs[2:3]})[0].argmax() == 2


def test_hard_routing_can_differ_from_the_product():
    # the coarse model prefers the group by a hair, the specialist is unsure: routing keeps the
    # group's member, the product the singleton
    coarse = np.array([[0.45, 0.55, 0.0, 0.0]])
    unsure = CountingSpecialist(np.array([[0.5, 0.5]]))
    assert routed(HIERARCHY, coarse, unsure).labels[0] in (1, 3)
    assert product(HIERARCHY, coarse, {"odd": unsure.probs}).argmax(1)[0] == 0


def test_stacking_matches_scikit_learn_and_round_trips_through_json():
    rng = np.random.default_rng(1)
    coarse, odd = random_probs(rng, 200, 4), random_probs(rng, 200, 2)
    labels = rng.integers(0, 5, size=200)
    features = stacking_features(HIERARCHY, coarse, {"odd": odd})
    assert features.shape == (200, 6)
    combiner = Stacking.fit(features, labels, num_classes=5, c=0.5)
    reference = LogisticRegression(C=0.5, max_iter=2000).fit(features, labels)
    assert np.allclose(combiner.predict_proba(features), reference.predict_proba(features), atol=1e-6)
    again = Stacking.from_json(combiner.to_json())
    assert np.array_equal(again.predict_proba(features), combiner.predict_proba(features))
    assert "pickle" not in combiner.to_json()


def test_stacking_binary_and_missing_classes():
    rng = np.random.default_rng(2)
    features = rng.normal(size=(60, 3))
    labels = np.where(features[:, 0] > 0, 4, 1)  # only two of five classes seen
    combiner = Stacking.fit(features, labels, num_classes=5)
    probs = combiner.predict_proba(features)
    reference = LogisticRegression(max_iter=2000).fit(features, labels).predict_proba(features)
    assert probs.shape == (60, 5) and np.allclose(probs[:, [1, 4]], reference, atol=1e-6)
    assert np.allclose(probs[:, [0, 2, 3]], 0)


def test_routed_probabilities_split_unrun_groups_evenly():
    coarse = np.array([[0.8, 0.2, 0.0, 0.0]])
    outcome = routed(HIERARCHY, coarse, CountingSpecialist(np.array([[0.9, 0.1]])))
    assert outcome.probs[0].tolist() == pytest.approx([0.8, 0.1, 0.0, 0.1, 0.0])
