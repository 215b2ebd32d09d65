"""Both kinds of hierarchy: label maps, their stages, and how each combines and reports itself."""
import json

import numpy as np
import pytest

from hierclf.errors import RecipeError
from hierclf.hierarchy.kinds import (FactorHierarchy, GroupHierarchy, build_hierarchy, decode_factors, encode_factors,
                               hierarchy_from_json, suggest_groups)
from hierclf.recipe.reading import recipe_from_dict
from hierclf.hierarchy.stage import NOT_IN_STAGE

NAMES = tuple(f"c{i}" for i in range(17))
# five classes; coarse classes: 0, {1, 3} = "odd", 2, 4
FIVE = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))
MASK = FactorHierarchy.from_config({"mask": ["wear", "incorrect", "not_wear"], "gender": 2, "age": 3})


def random_probs(rng, rows, columns):
    values = rng.random((rows, columns)) + 0.01
    return values / values.sum(1, keepdims=True)


def test_flat_hierarchy_is_the_identity():
    flat = GroupHierarchy.from_config((), (), NAMES)
    assert flat.is_flat and flat.coarse_names == NAMES
    assert np.array_equal(flat.coarse_targets(np.arange(17))[:, 0], np.arange(17))
    assert flat.combiners == ("flat",) and flat.combiner_for("routed", "x") == "flat"


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


def test_product_is_group_times_conditional_and_sums_to_one():
    rng = np.random.default_rng(0)
    coarse, odd = random_probs(rng, 50, 4), random_probs(rng, 50, 2)
    fine = FIVE.product(coarse, {"odd": odd})
    assert np.allclose(fine.sum(1), 1.0)
    assert np.allclose(fine[:, [0, 2, 4]], coarse[:, [0, 2, 3]])
    assert np.allclose(fine[:, 1], coarse[:, 1] * odd[:, 0]) and np.allclose(fine[:, 3], coarse[:, 1] * odd[:, 1])


class CountingSpecialist:
    """Stands in for a specialist's models: answers with fixed probabilities and records every row it sees."""

    def __init__(self, probs):
        self.probs, self.seen = probs, []

    def __call__(self, name, rows):
        self.seen.extend(rows.tolist())
        return self.probs[rows]


COARSE = np.array([[0.7, 0.2, 0.05, 0.05],   # → a
                   [0.1, 0.6, 0.2, 0.1],     # → odd → specialist says d
                   [0.2, 0.3, 0.4, 0.1],     # → c (odd at 0.3)
                   [0.05, 0.9, 0.0, 0.05]])  # → odd → specialist says b
ODD = np.array([[0.5, 0.5], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])


def test_routing_runs_the_specialist_only_on_routed_rows():
    specialist = CountingSpecialist(ODD)
    outcome = FIVE.route(COARSE, specialist)
    assert sorted(specialist.seen) == [1, 3]
    assert outcome.labels.tolist() == [0, 3, 2, 1]
    assert np.isnan(outcome.specialist_probs["odd"][[0, 2]]).all()
    assert np.allclose(outcome.probs.sum(1), 1.0)
    # with τ = 0.25 it also runs where P(odd) ≥ 0.25 (row 2), and the product decides there
    widened = CountingSpecialist(ODD)
    outcome = FIVE.route(COARSE, widened, threshold=0.25)
    assert sorted(widened.seen) == [1, 2, 3]
    assert outcome.labels[2] == FIVE.product(COARSE[2:3], {"odd": ODD[2:3]})[0].argmax() == 2


def test_hard_routing_can_differ_from_the_product():
    # the coarse model prefers the group by a hair, the specialist is unsure: routing keeps the
    # group's member, the product the singleton
    coarse = np.array([[0.45, 0.55, 0.0, 0.0]])
    unsure = CountingSpecialist(np.array([[0.5, 0.5]]))
    assert FIVE.route(coarse, unsure).labels[0] in (1, 3)
    assert FIVE.product(coarse, {"odd": unsure.probs}).argmax(1)[0] == 0


def test_routed_probabilities_split_unrun_groups_evenly():
    outcome = FIVE.route(np.array([[0.8, 0.2, 0.0, 0.0]]), CountingSpecialist(np.array([[0.9, 0.1]])))
    assert outcome.probs[0].tolist() == pytest.approx([0.8, 0.1, 0.0, 0.1, 0.0])


def test_trace_and_report_of_a_group_hierarchy():
    routed = FIVE.route(COARSE, CountingSpecialist(ODD))
    trace = FIVE.trace(COARSE, routed.specialist_probs)
    assert trace["coarse"].tolist() == ["a", "odd", "c", "odd"]
    assert trace["specialist_label"].tolist() == ["", "d", "", "b"] and np.isnan(trace["specialist_confidence"][0])
    report = FIVE.stage_report(np.array([0, 3, 2, 4]), COARSE, {"odd": ODD})
    assert report["groups"] == [{"name": "odd", "classes": ["b", "d"]}]
    assert report["coarse"]["accuracy"] == report["routing"]["accuracy"] == 0.75  # row 3 (e) went to odd
    assert report["routing"]["per_group"] == {"odd": 1.0}


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


def test_mixed_radix_labels_match_the_competitions_formula():
    sizes = (3, 2, 3)
    values = np.array([(mask, gender, age) for mask in range(3) for gender in range(2) for age in range(3)])
    labels = encode_factors(values, sizes)
    assert labels.tolist() == [mask * 6 + gender * 3 + age for mask, gender, age in values]
    assert labels.tolist() == list(range(18))
    assert np.array_equal(decode_factors(labels, sizes), values)


def test_factor_hierarchy_names_targets_and_json():
    assert MASK.num_classes == 18 and MASK.sizes == (3, 2, 3)
    assert MASK.class_names[15] == "not_wear/1/0"  # 2·6 + 1·3 + 0
    assert MASK.coarse_names[:4] == ("mask=wear", "mask=incorrect", "mask=not_wear", "gender=0")
    assert MASK.coarse_targets(np.array([15])).tolist() == [[2, 1, 0]]
    unnamed = FactorHierarchy.from_config({"a": 2, "b": 3})
    assert unnamed.class_names == tuple(str(i) for i in range(6))  # joint indices, as the competition's labels
    assert hierarchy_from_json(MASK.to_json()) == MASK
    separate = FactorHierarchy.from_config({"a": 2, "b": 3}, separate=True)
    assert hierarchy_from_json(separate.to_json()).separate
    assert isinstance(hierarchy_from_json(GroupHierarchy(("a", "b")).to_json()), GroupHierarchy)


def test_the_stages_of_a_factor_hierarchy():
    recipe = recipe_from_dict({"hierarchy": {"heads": {"mask": 3, "gender": 2, "age": 3}},
                               "heads": {"age": {"weight": 2.0}}, "fine": {"age": {"img_size": 64}}})
    coarse = MASK.coarse_stage(recipe)
    assert coarse.layout == MASK.coarse_layout and coarse.loss_keys == ("heads.mask", "heads.gender", "heads.age")
    assert [loss.weight for loss in coarse.losses] == [1.0, 1.0, 2.0]
    age = MASK.specialist_stage(MASK.head("age"), recipe)
    assert age.targets(np.array([15, 17]))[:, 0].tolist() == [0, 2] and age.config.img_size == 64
    assert age.coarse_backbone == "backbone."
    separate = FactorHierarchy.from_config({"mask": 3, "gender": 2, "age": 3}, separate=True)
    assert separate.specialist_stage(separate.head("age"), recipe).coarse_backbone == "models.age."
    assert separate.coarse_stage(recipe).separate


def test_joint_probabilities_are_the_product_of_the_heads():
    rng = np.random.default_rng(0)
    heads = {name: rng.dirichlet(np.ones(size), size=5) for name, size in zip(("mask", "gender", "age"), (3, 2, 3))}
    joint = MASK.joint_probs(heads)
    assert joint.shape == (5, 18) and np.allclose(joint.sum(1), 1.0)
    for label, (mask, gender, age) in enumerate(MASK.decode(np.arange(18))):
        assert np.allclose(joint[:, label], heads["mask"][:, mask] * heads["gender"][:, gender] * heads["age"][:, age])
    side_by_side = np.concatenate([heads["mask"], heads["gender"], heads["age"]], axis=1)
    assert all(np.array_equal(MASK.split(side_by_side)[name], heads[name]) for name in heads)
    age = rng.dirichlet(np.ones(3), size=5)
    assert np.allclose(MASK.product(side_by_side, {"age": age}), MASK.joint_probs({**heads, "age": age}))


def test_trace_and_report_of_a_factor_hierarchy():
    rng = np.random.default_rng(1)
    coarse, age = rng.dirichlet(np.ones(8), size=6), rng.dirichlet(np.ones(3), size=6)
    coarse[:, :3] = rng.dirichlet(np.ones(3), size=6)
    coarse[:, 3:5] = rng.dirichlet(np.ones(2), size=6)
    trace = MASK.trace(coarse, {"age": age})
    assert trace["age_by"].tolist() == ["specialist"] * 6 and trace["mask_by"].tolist() == ["coarse"] * 6
    assert trace["age"].tolist() == [str(v) for v in age.argmax(1)]
    labels = rng.integers(0, 18, 6)
    report = MASK.stage_report(labels, coarse, {"age": age})["heads"]
    assert report["age"]["product"] == report["age"]["specialist"] and "specialist" not in report["mask"]
    assert report["mask"]["product"] == report["mask"]["coarse"]


def test_each_kind_says_which_combiners_apply():
    assert FIVE.combiner_for("routed", "--combiner 'routed'") == "routed"
    with pytest.raises(RecipeError, match="nothing to route; use product or stacking"):
        MASK.combiner_for("routed", "--combiner 'routed'")
    with pytest.raises(RecipeError, match="--combiner 'flat': a run with groups combines by product, routed, stacking"):
        FIVE.combiner_for("flat", "--combiner 'flat'")
    with pytest.raises(RecipeError, match="no such combiner"):
        FIVE.combiner_for("average", "--combiner 'average'")


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
    named = recipe_from_dict({"hierarchy": {"heads": {"a": ["x", "y"], "b": 2}}}).hierarchy
    assert build_hierarchy(named, ("0", "1", "2", "3")).class_names[0] == "x/0"  # joint indices take the heads' names
    with pytest.raises(RecipeError, match=r"hierarchy.heads make 4 joint classes .* but the data's labels run 0..2"):
        build_hierarchy(named, ("0", "1", "2"))  # the heads' product must be the classes: no empty joint class
    with pytest.raises(RecipeError, match="hierarchy.heads make 4 classes .* but the data has 3"):
        build_hierarchy(named, ("a", "b", "c"))


def test_factor_helpers_are_exported_from_the_package():
    import hierclf

    assert hierclf.encode_factors([[2, 1, 0]], (3, 2, 3)).tolist() == [15]
    assert hierclf.decode_factors([15], (3, 2, 3)).tolist() == [[2, 1, 0]]
    assert hierclf.FactorHierarchy is FactorHierarchy


FIVE_OVER_FLAT = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"), flat_coarse=True)


def test_a_flat_coarse_stage_gives_each_group_the_sum_of_its_members():
    rng = np.random.default_rng(0)
    flat = random_probs(rng, 50, 5)
    grouped = FIVE_OVER_FLAT.group_probs(flat)
    assert np.allclose(grouped, np.stack([flat[:, 0], flat[:, 1] + flat[:, 3], flat[:, 2], flat[:, 4]], axis=1))
    assert np.array_equal(FIVE.group_probs(grouped), grouped)  # a coarse model's own outputs stay as they are
    within = FIVE_OVER_FLAT.within(flat, "odd")
    assert np.allclose(within, flat[:, [1, 3]] / (flat[:, 1] + flat[:, 3])[:, None])
    # with the specialist's own distribution the product is the same as over a coarse model's outputs
    specialist = {"odd": random_probs(rng, 50, 2)}
    assert np.allclose(FIVE_OVER_FLAT.product(flat, specialist), FIVE.product(grouped, specialist))
    assert np.array_equal(FIVE_OVER_FLAT.route(flat, lambda n, rows: specialist[n][rows]).labels,
                          FIVE.route(grouped, lambda n, rows: specialist[n][rows]).labels)
    # with the flat model's own within-group distribution the product gives the flat model back
    assert np.allclose(FIVE_OVER_FLAT.product(flat, {"odd": within}), flat)
    labels = rng.integers(0, 5, 50)
    assert np.array_equal(FIVE_OVER_FLAT.coarse_targets(labels)[:, 0], labels)
    report = FIVE_OVER_FLAT.stage_report(labels, flat, specialist)
    assert report["routing"]["accuracy"] == pytest.approx(float((grouped.argmax(1) == FIVE.fine_to_coarse[labels])
                                                                .mean()))
    with pytest.raises(Exception, match="no distribution within groups"):
        FIVE.within(flat[:, :4], "odd")


def test_a_flat_coarse_stage_is_kept_in_hierarchy_json_and_adds_the_blend_combiner():
    assert hierarchy_from_json(FIVE_OVER_FLAT.to_json()) == FIVE_OVER_FLAT != FIVE
    assert FIVE_OVER_FLAT.combiners == ("product", "routed", "stacking", "blend")
    assert FIVE_OVER_FLAT.coarse_layout.output_names == FIVE_OVER_FLAT.class_names
    stage = FIVE_OVER_FLAT.specialist_stage(FIVE_OVER_FLAT.group("odd"), recipe_from_dict({}))
    assert stage.coarse_rows == (1, 3)
    assert FIVE.specialist_stage(FIVE.group("odd"), recipe_from_dict({})).coarse_rows == ()
    with pytest.raises(RecipeError, match="blend needs hierarchy.coarse_run"):
        FIVE.combiner_for("blend", "--combiner 'blend'")
    config = recipe_from_dict({"hierarchy": {"heads": {"a": 2, "b": 2}, "coarse_run": "/runs/flat"}}).hierarchy
    with pytest.raises(RecipeError, match="coarse_run: a flat run can be the coarse stage of groups, not of heads"):
        build_hierarchy(config, ("0", "1", "2", "3"))
    config = recipe_from_dict({"hierarchy": {"coarse_run": "/runs/flat"}}).hierarchy
    with pytest.raises(RecipeError, match="needs groups for specialists to refine"):
        build_hierarchy(config, ("a", "b"))
