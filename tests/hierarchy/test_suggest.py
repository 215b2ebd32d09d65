"""Groups proposed from a flat run's out-of-fold confusions."""
import numpy as np

from hierclf.hierarchy.suggest import attribute_values, suggest_groups, suggestion


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


def test_a_group_of_every_class_is_never_suggested():
    # six classes whose errors spread over all of them, two pairs a little more: the threshold
    # would merge all six, which is the flat problem again
    matrix = np.full((6, 6), 6.0) + np.diag(np.full(6, 60.0))
    matrix[0, 1] = matrix[1, 0] = matrix[2, 3] = matrix[3, 2] = 12.0
    found = suggestion(matrix, max_groups=3, min_confusion=0.02)
    assert found.every_class_merged and found.groups
    assert all(len(group.members) < 6 for group in found.groups)
    assert suggest_groups(np.array([[50.0, 10.0], [12.0, 50.0]])) == []  # two classes: a group of both is flat


def test_labels_made_of_attributes_are_recognised():
    names = [f"{mask}/{gender}/{age}" for mask in ("wear", "not_wear") for gender in ("male", "female")
             for age in ("<30", ">=30")]
    assert attribute_values(names) == [["wear", "not_wear"], ["male", "female"], ["<30", ">=30"]]
    assert attribute_values(names[:-1]) is None  # not every combination
    assert attribute_values(["cat", "dog", "bird"]) is None
    assert attribute_values(["a/x", "a/y", "b/x", "b/y/z"]) is None
