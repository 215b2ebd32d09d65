"""Blend: the flat model's within-group distribution against the specialist's, weighed by out-of-fold log-loss."""
import json

import numpy as np
import pytest

from hierclf.errors import RunError
from hierclf.readback import ReadBack

from hierclf.combine.base import StageOutputs
from hierclf.combine.blend import Blend
from hierclf.hierarchy.groups import GroupHierarchy

OVER_FLAT = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"), flat_coarse=True)


def random_probs(rng, rows, columns):
    values = rng.random((rows, columns)) + 0.01
    return values / values.sum(1, keepdims=True)


def test_blend_weighs_the_flat_model_against_the_specialist_by_out_of_fold_log_loss():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 400)
    flat = random_probs(rng, 400, 5)
    in_group = np.where(labels == 3, 1, 0)
    knowing = np.stack([1 - in_group, in_group], axis=1) * 0.9 + 0.05  # right on every group row
    noise = random_probs(rng, 400, 2)
    assert Blend().fit(OVER_FLAT, StageOutputs(flat, {"odd": knowing}, labels)).weights == {"odd": 0.0}
    # a specialist that knows nothing gets no weight: the flat model's own distribution is kept
    flat_knowing = flat.copy()
    flat_knowing[:, [1, 3]] = np.stack([1 - in_group, in_group], axis=1) * 0.9 * flat[:, [1, 3]].sum(1, keepdims=True) \
        + 0.05 * flat[:, [1, 3]].sum(1, keepdims=True)
    fitted = Blend().fit(OVER_FLAT, StageOutputs(flat_knowing, {"odd": noise}, labels))
    assert fitted.weights == {"odd": 1.0}
    combined = fitted.combine(OVER_FLAT, flat_knowing, ["odd"], lambda name, rows: noise[rows])
    assert np.allclose(combined.probs, flat_knowing)
    # in between, the weight minimises the group rows' log-loss on the grid; the state is JSON
    half = 0.5 * knowing + 0.5 * noise
    blend = Blend().fit(OVER_FLAT, StageOutputs(flat, {"odd": half}, labels))
    rows = np.isin(labels, [1, 3])
    target = (labels[rows] == 3).astype(int)
    within = flat[rows][:, [1, 3]] / flat[rows][:, [1, 3]].sum(1, keepdims=True)

    def loss(w):
        mixed = np.exp(w * np.log(within) + (1 - w) * np.log(half[rows]))
        mixed /= mixed.sum(1, keepdims=True)
        return -np.log(mixed[np.arange(rows.sum()), target]).mean()
    assert loss(blend.weights["odd"]) <= min(loss(w) for w in np.linspace(0, 1, 21)) + 1e-12
    check = ReadBack("combiner.json", "fit it again")
    restored = Blend().load_state(json.loads(json.dumps(blend.state())), check, OVER_FLAT)
    assert restored.weights == blend.weights
    for state, message in [({"weights": 3}, "blend.weights is 3, not a table"),
                           ({"weights": {}}, "no weight for group 'odd'"),
                           ({"weights": {"odd": 1.5}}, r"blend.weights.odd is 1.5, expected >= 0.0 and <= 1.0"),
                           ({"weights": {"odd": float("nan")}}, "not a finite number"),
                           ({"weights": {"odd": "0.5"}}, "not a finite number")]:
        with pytest.raises(RunError, match=f"combiner.json: .*{message}; fit it again"):
            Blend().load_state(state, check, OVER_FLAT)
