"""Hard routing: a specialist runs only on the rows the coarse argmax sends it."""
import numpy as np
import pytest

from hierclf.combine.base import StageOutputs
from hierclf.combine.product import product
from hierclf.combine.routed import Routed
from hierclf.hierarchy.groups import GroupHierarchy

FIVE = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))
FIVE_OVER_FLAT = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"), flat_coarse=True)
COARSE = np.array([[0.7, 0.2, 0.05, 0.05],   # → a
                   [0.1, 0.6, 0.2, 0.1],     # → odd → specialist says d
                   [0.2, 0.3, 0.4, 0.1],     # → c (odd at 0.3)
                   [0.05, 0.9, 0.0, 0.05]])  # → odd → specialist says b
ODD = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])


class CountingSpecialist:
    """Stands in for a specialist's models: answers with fixed probabilities and records every row it sees."""

    def __init__(self, probs):
        self.probs, self.seen = probs, []

    def __call__(self, name, rows):
        self.seen.extend(rows.tolist())
        return self.probs[rows]


def route(coarse, specialist, threshold=0.0, hierarchy=FIVE):
    return Routed(threshold).combine(hierarchy, coarse, ["odd"], specialist)


def test_routing_runs_the_specialist_only_on_routed_rows():
    specialist = CountingSpecialist(ODD)
    outcome = route(COARSE, specialist)
    assert sorted(specialist.seen) == [1, 3] and outcome.ran_on["odd"].tolist() == [1, 3]
    assert outcome.labels.tolist() == [0, 3, 2, 1]
    assert np.isnan(outcome.specialist_probs["odd"][[0, 2]]).all()
    assert np.allclose(outcome.probs.sum(1), 1.0)
    # with τ = 0.25 it also runs where P(odd) ≥ 0.25 (row 2), and the product decides there
    widened = CountingSpecialist(ODD)
    outcome = route(COARSE, widened, threshold=0.25)
    assert sorted(widened.seen) == [1, 2, 3]
    assert outcome.labels[2] == product(FIVE, COARSE[2:3], {"odd": ODD[2:3]})[0].argmax() == 2


def test_hard_routing_can_differ_from_the_product():
    # the coarse model prefers the group by a hair, the specialist is unsure: routing keeps the
    # group's member, the product the singleton
    coarse = np.array([[0.45, 0.55, 0.0, 0.0]])
    unsure = CountingSpecialist(np.array([[0.5, 0.5]]))
    assert route(coarse, unsure).labels[0] in (1, 3)
    assert product(FIVE, coarse, {"odd": unsure.probs}).argmax(1)[0] == 0


def test_routed_probabilities_split_unrun_groups_evenly():
    outcome = route(np.array([[0.8, 0.2, 0.0, 0.0]]), CountingSpecialist(np.array([[0.9, 0.1]])))
    assert outcome.probs[0].tolist() == pytest.approx([0.8, 0.1, 0.0, 0.1, 0.0])


def test_over_a_flat_run_routing_goes_by_the_summed_groups():
    rng = np.random.default_rng(0)
    flat = rng.dirichlet(np.ones(5), size=50)
    specialist = rng.dirichlet(np.ones(2), size=50)
    grouped = FIVE_OVER_FLAT.coarse_terms(flat)[0]
    over_flat = route(flat, lambda name, rows: specialist[rows], hierarchy=FIVE_OVER_FLAT)
    assert np.array_equal(over_flat.labels, route(grouped, lambda name, rows: specialist[rows]).labels)
    data = StageOutputs(grouped, {"odd": specialist})
    assert len(Routed().combine(FIVE, grouped, ["odd"], data.run_specialist).ran_on["odd"]) == \
        int((grouped.argmax(1) == 1).sum())
