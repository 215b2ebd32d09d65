import numpy as np
import pytest

from hierclf.errors import RecipeError
from hierclf.hierarchy import GroupHierarchy

NAMES = tuple(f"c{i}" for i in range(17))


def test_flat_hierarchy_is_the_identity():
    flat = GroupHierarchy.from_config((), (), NAMES)
    assert flat.is_flat and flat.coarse_names == NAMES
    assert np.array_equal(flat.coarse_targets(np.arange(17)), np.arange(17))


def test_documents_groups_merge_into_one_coarse_class():
    hierarchy = GroupHierarchy.from_config([[3, "c7", 14]], ["certificates"], NAMES)
    assert len(hierarchy.coarse_names) == 15
    merged = hierarchy.coarse_targets(np.array([3, 7, 14]))
    assert len(set(merged)) == 1 and hierarchy.coarse_names[merged[0]] == "certificates"
    assert hierarchy.coarse_names[hierarchy.coarse_targets(np.array([16]))[0]] == "c16"
    assert GroupHierarchy.from_json(hierarchy.to_json()) == hierarchy
    import json
    both_ways = json.loads(hierarchy.to_json())
    merged_index = both_ways["fine_to_coarse"][3]
    assert both_ways["coarse_to_fine"][merged_index] == [3, 7, 14]
    assert all(both_ways["coarse_to_fine"][c] == [f] for f, c in enumerate(both_ways["fine_to_coarse"])
               if f not in (3, 7, 14))
    assert GroupHierarchy.from_config([[1, 2]], (), NAMES).groups[0].name == "c1+c2"


@pytest.mark.parametrize("groups, message", [
    ([[1, 2], [2, 3]], "'c2' is in two groups"),
    ([[1, "nope"]], "unknown class 'nope'"),
    ([[5]], "needs at least 2"),
    ([[1, 40]], "class index 40 is out of range"),
])
def test_bad_groups(groups, message):
    with pytest.raises(RecipeError, match=message):
        GroupHierarchy.from_config(groups, (), NAMES)


def test_suggest_groups_finds_the_planted_groups():
    from hierclf.hierarchy import suggest_groups

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
