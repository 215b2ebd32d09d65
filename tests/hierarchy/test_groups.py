"""A group hierarchy: its label maps, its stages, its product terms, its trace and report section."""
import json

import numpy as np
import pytest

from hierclf.errors import RecipeError
from hierclf.hierarchy.build import hierarchy_from_json
from hierclf.hierarchy.groups import GroupHierarchy
from hierclf.hierarchy.stage import NOT_IN_STAGE
from hierclf.recipe.reading import recipe_from_dict

NAMES = tuple(f"c{i}" for i in range(17))
# five classes; coarse classes: 0, {1, 3} = "odd", 2, 4
FIVE = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))
FIVE_OVER_FLAT = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"), flat_coarse=True)
COARSE = np.array([[0.7, 0.2, 0.05, 0.05],   # → a
                   [0.1, 0.6, 0.2, 0.1],     # → odd
                   [0.2, 0.3, 0.4, 0.1],     # → c
                   [0.05, 0.9, 0.0, 0.05]])  # → odd
ODD = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])


def random_probs(rng, rows, columns):
    values = rng.random((rows, columns)) + 0.01
    return values / values.sum(1, keepdims=True)


def test_flat_hierarchy_is_the_identity():
    flat = GroupHierarchy.from_config((), (), NAMES)
    assert flat.is_flat and flat.coarse_names == NAMES
    assert np.array_equal(flat.coarse_targets(np.arange(17))[:, 0], np.arange(17))
    assert len(flat.terms) == 1 and flat.terms[0].part is None  # the router alone: the classes themselves


def test_documents_groups_merge_into_one_coarse_class():
    hierarchy = GroupHierarchy.from_config([[3, "c7", 14]], ["certificates"], NAMES)
    assert len(hierarchy.coarse_names) == 15
    merged = hierarchy.coarse_targets(np.array([3, 7, 14]))[:, 0]
    assert len(set(merged)) == 1 and hierarchy.coarse_names[merged[0]] == "certificates"
    assert hierarchy.coarse_names[hierarchy.coarse_targets(np.array([16]))[0, 0]] == "c16"
    assert GroupHierarchy.from_json(hierarchy.to_json()) == hierarchy
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


def test_the_stages_of_a_group_hierarchy():
    recipe = recipe_from_dict({"coarse": {"label_smoothing": 0.1}, "fine": {"odd": {"img_size": 64}}})
    coarse = FIVE.coarse_stage(recipe)
    assert coarse.layout.output_names == ("a", "odd", "c", "e") and coarse.losses[0].label_smoothing == 0.1
    assert coarse.targets(np.array([0, 1, 3, 4]))[:, 0].tolist() == [0, 1, 1, 3]
    odd = FIVE.specialist_stage(FIVE.group("odd"), recipe)
    assert (odd.name, odd.key, odd.config.img_size) == ("fine/odd", "fine.odd", 64)
    assert odd.layout.output_names == ("b", "d")
    assert odd.targets(np.array([0, 1, 3, 4]))[:, 0].tolist() == [NOT_IN_STAGE, 0, 1, NOT_IN_STAGE]


def test_the_terms_are_the_coarse_class_then_each_members_place_in_its_group():
    router, odd = FIVE.terms
    assert router.part is None and router.columns.tolist() == [0, 1, 2, 1, 3] and router.width == 4
    assert odd.part == "odd" and odd.columns.tolist() == [-1, 0, -1, 1, -1] and odd.members.tolist() == [1, 3]
    assert odd.targets(np.array([0, 1, 3])).tolist() == [-1, 0, 1]
    assert not odd.from_coarse and FIVE_OVER_FLAT.terms[1].from_coarse  # only a flat coarse run knows within groups
    coarse_terms = FIVE.coarse_terms(COARSE)
    assert coarse_terms[0] is COARSE and coarse_terms[1] is None


def test_a_flat_coarse_stage_gives_each_group_the_sum_of_its_members_and_its_distribution_within():
    rng = np.random.default_rng(0)
    flat = random_probs(rng, 50, 5)
    grouped, within = FIVE_OVER_FLAT.coarse_terms(flat)
    assert np.allclose(grouped, np.stack([flat[:, 0], flat[:, 1] + flat[:, 3], flat[:, 2], flat[:, 4]], axis=1))
    assert np.allclose(within, flat[:, [1, 3]] / (flat[:, 1] + flat[:, 3])[:, None])
    labels = rng.integers(0, 5, 50)
    assert np.array_equal(FIVE_OVER_FLAT.coarse_targets(labels)[:, 0], labels)
    section = FIVE_OVER_FLAT.stage_report(labels, flat, {"odd": random_probs(rng, 50, 2)}, flat)
    assert section.routing["accuracy"] == pytest.approx(float((grouped.argmax(1) == FIVE.fine_to_coarse[labels])
                                                             .mean()))


def test_trace_and_report_section_of_a_group_hierarchy():
    routed = np.full((4, 2), np.nan)
    routed[[1, 3]] = ODD[[1, 3]]  # the specialist ran where the coarse stage chose the group
    trace = FIVE.trace(COARSE, {"odd": routed})
    assert trace["coarse"].tolist() == ["a", "odd", "c", "odd"]
    assert trace["specialist_label"].tolist() == ["", "d", "", "b"] and np.isnan(trace["specialist_confidence"][0])
    section = FIVE.stage_report(np.array([0, 3, 2, 4]), COARSE, {"odd": ODD}, np.zeros((4, 5)))
    report = section.to_dict()
    assert report["groups"] == [{"name": "odd", "classes": ["b", "d"]}]
    assert report["coarse"]["accuracy"] == report["routing"]["accuracy"] == 0.75  # row 3 (e) went to odd
    assert report["routing"]["per_group"] == {"odd": 1.0}
    assert section.specialists == {"odd": 0.5}  # right on its group's one row (d); b, without rows, scores 0
    assert section.text_lines() == ["routing accuracy 0.7500 (upper bound of the routed pipeline)"]
    assert section.markdown_intro()[0] == "Groups: **odd** = b, d"
    assert "**0.7500**" in "".join(section.markdown_lines())
    flat = GroupHierarchy.from_config((), (), ("a", "b"))
    quiet = flat.stage_report(np.array([0, 1]), np.eye(2), {}, np.eye(2))
    assert set(quiet.to_dict()) == {"groups", "coarse"} and quiet.text_lines() == quiet.markdown_lines() == []


def test_a_flat_coarse_stage_is_kept_in_hierarchy_json():
    assert hierarchy_from_json(FIVE_OVER_FLAT.to_json()) == FIVE_OVER_FLAT != FIVE
    assert FIVE_OVER_FLAT.coarse_layout.output_names == FIVE_OVER_FLAT.class_names
    stage = FIVE_OVER_FLAT.specialist_stage(FIVE_OVER_FLAT.group("odd"), recipe_from_dict({}))
    assert stage.coarse_rows == (1, 3)
    assert FIVE.specialist_stage(FIVE.group("odd"), recipe_from_dict({})).coarse_rows == ()
