"""Groups proposed from a flat run's out-of-fold confusions."""
import numpy as np

from hierclf.hierarchy.suggest import suggest_groups


def test_suggest_groups_finds_the_planted_groups():
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(80, 100, size=10)).astype(float)
    matrix += rng.integers(0, 2, size=(10, 10)) * (1 - np.eye(10))      # background noise: ≤ 1 error per pair
    for group, rate in (([1, 4, 7], 15), ([2, 5], 25)):                  # planted confusions
        for a in group:
            for b in group:
                if a != b:
                    matrix[a, b] += rate + rng.integers(0, 5)
    found = suggest_groups(matrix, max_groups=3, min_confusion=0.05)
    assert [g.members for g in found] == [(1, 4, 7), (2, 5)]
    assert found[0].error_share > found[1].error_share > 0.2
    assert sum(g.error_share for g in found) > 0.7  # the rest is the background noise
    assert suggest_groups(np.diag([50, 50, 50])) == []
    assert len(suggest_groups(matrix, max_groups=1, min_confusion=0.05)) == 1
