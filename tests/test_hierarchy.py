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
