"""Stacking: a logistic regression on the stages' log-probabilities, kept as plain JSON."""
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from hierclf.combine.base import StageOutputs
from hierclf.combine.stacking import Stacking, stacking_features
from hierclf.hierarchy.groups import GroupHierarchy

FIVE = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))


def outputs(seed: int = 1, rows: int = 200) -> StageOutputs:
    rng = np.random.default_rng(seed)
    return StageOutputs(rng.dirichlet(np.ones(4), rows), {"odd": rng.dirichlet(np.ones(2), rows)},
                        rng.integers(0, 5, size=rows))


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
