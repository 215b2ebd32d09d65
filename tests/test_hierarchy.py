import numpy as np
import pytest

from hierclf.errors import RecipeError
from hierclf.hierarchy import (FactorHierarchy, GroupHierarchy, build_hierarchy, decode_factors, encode_factors,
                               hierarchy_from_json)
from hierclf.recipe import recipe_from_dict

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


def test_mixed_radix_labels_match_the_competitions_formula():
    sizes = (3, 2, 3)
    values = np.array([(mask, gender, age) for mask in range(3) for gender in range(2) for age in range(3)])
    labels = encode_factors(values, sizes)
    assert labels.tolist() == [mask * 6 + gender * 3 + age for mask, gender, age in values]
    assert labels.tolist() == list(range(18))
    assert np.array_equal(decode_factors(labels, sizes), values)


def test_factor_hierarchy_names_targets_and_json():
    factors = FactorHierarchy.from_config({"mask": ["wear", "incorrect", "not_wear"], "gender": 2, "age": 3})
    assert factors.num_classes == 18 and factors.sizes == (3, 2, 3)
    assert factors.class_names[15] == "not_wear/1/0"  # 2·6 + 1·3 + 0
    assert factors.coarse_names[:4] == ("mask=wear", "mask=incorrect", "mask=not_wear", "gender=0")
    assert factors.coarse_targets(np.array([15])).tolist() == [[2, 1, 0]]
    unnamed = FactorHierarchy.from_config({"a": 2, "b": 3})
    assert unnamed.class_names == tuple(str(i) for i in range(6))  # joint indices, as the competition's labels
    assert hierarchy_from_json(factors.to_json()) == factors
    separate = FactorHierarchy.from_config({"a": 2, "b": 3}, separate=True)
    assert hierarchy_from_json(separate.to_json()).separate
    assert isinstance(hierarchy_from_json(GroupHierarchy(("a", "b")).to_json()), GroupHierarchy)


def test_joint_probabilities_are_the_product_of_the_heads():
    rng = np.random.default_rng(0)
    factors = FactorHierarchy.from_config({"mask": 3, "gender": 2, "age": 3})
    heads = {name: rng.dirichlet(np.ones(size), size=5) for name, size in zip(("mask", "gender", "age"), (3, 2, 3))}
    joint = factors.joint_probs(heads)
    assert joint.shape == (5, 18) and np.allclose(joint.sum(1), 1.0)
    for label, (mask, gender, age) in enumerate(factors.decode(np.arange(18))):
        assert np.allclose(joint[:, label], heads["mask"][:, mask] * heads["gender"][:, gender] * heads["age"][:, age])
    side_by_side = np.concatenate([heads["mask"], heads["gender"], heads["age"]], axis=1)
    assert all(np.array_equal(factors.split(side_by_side)[name], heads[name]) for name in heads)


@pytest.mark.parametrize("heads, message", [
    ({"mask": 1}, "at least 2 values"),
    ({"mask": ["a", "a"]}, "value names must differ"),
    ({"a b": 2, "a_b": 2}, "same folder names"),
])
def test_factor_hierarchy_refusals(heads, message):
    with pytest.raises(RecipeError, match=message):
        FactorHierarchy.from_config(heads)


def test_build_hierarchy_checks_the_datas_classes():
    config = recipe_from_dict({"hierarchy": {"heads": {"a": 2, "b": 2}}}).hierarchy
    assert isinstance(build_hierarchy(config, ("0", "1", "2", "3")), FactorHierarchy)
    with pytest.raises(RecipeError, match="hierarchy.heads make 4 classes .* but the data has 3"):
        build_hierarchy(config, ("0", "1", "2"))


def test_factor_helpers_are_exported_from_the_package():
    import hierclf

    assert hierclf.encode_factors([[2, 1, 0]], (3, 2, 3)).tolist() == [15]
    assert hierclf.decode_factors([15], (3, 2, 3)).tolist() == [[2, 1, 0]]
    assert hierclf.FactorHierarchy is FactorHierarchy
