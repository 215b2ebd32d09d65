"""Stacking: a logistic regression on the stages' log-probabilities, kept as plain JSON."""
import json

import numpy as np
import pytest

from hierclf.readback import ReadBack
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
    again = Stacking(c=0.5).load_state(state, ReadBack("combiner.json", "fit it again"), FIVE)
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

    good = Stacking().fit(FIVE, outputs()).state()
    check = ReadBack("combiner.json", "fit it again")
    for change, message in [({"coef": "x"}, "stacking.coef is not a list of rows"),
                            ({"num_classes": 4}, "num_classes is 4, expected >= 5"),
                            ({"classes": [0, 1, 7, 3, 4]}, r"classes\[2\] is 7"),
                            ({"intercept": good["intercept"][:3]}, "do not fit together"),
                            ({"coef": [[float("inf")] * 6] + good["coef"][1:]}, "not a finite number"),
                            ({"coef": [good["coef"][0][:5]] + good["coef"][1:]}, r"coef\[1\] holds 6 values, expected 5")]:
        with pytest.raises(RunError, match=f"combiner.json: .*{message}.*; fit it again"):
            Stacking().load_state({**good, **change}, check, FIVE)
    narrow = Stacking().load_state({**good, "coef": [row[:5] for row in good["coef"]]}, check, FIVE)
    with pytest.raises(RunError, match="fit on 5 features, but the stages give 6"):
        narrow.predict_proba(np.zeros((2, 6)))
