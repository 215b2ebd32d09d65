"""An attribute hierarchy: its names and targets, its stages, its terms, its trace and report section."""
import numpy as np
import pytest

from hierclf.data.labels import decode_factors, encode_factors
from hierclf.errors import RecipeError
from hierclf.hierarchy.build import hierarchy_from_json
from hierclf.hierarchy.factors import FactorHierarchy
from hierclf.hierarchy.groups import GroupHierarchy
from hierclf.recipe.reading import recipe_from_dict

MASK = FactorHierarchy.from_config({"mask": ["wear", "incorrect", "not_wear"], "gender": 2, "age": 3})


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


def test_the_terms_are_each_classes_value_of_each_head_and_the_coarse_stage_supplies_them():
    assert [term.part for term in MASK.terms] == ["mask", "gender", "age"]
    assert all(term.from_coarse for term in MASK.terms)
    assert [int(term.columns[15]) for term in MASK.terms] == [2, 1, 0]
    rng = np.random.default_rng(0)
    side_by_side = np.concatenate([rng.dirichlet(np.ones(size), size=5) for size in (3, 2, 3)], axis=1)
    blocks = MASK.coarse_terms(side_by_side)
    assert [block.shape[1] for block in blocks] == [3, 2, 3] and np.array_equal(blocks[1], side_by_side[:, 3:5])


def test_trace_and_report_section_of_a_factor_hierarchy():
    from hierclf.combine.product import product

    rng = np.random.default_rng(1)
    coarse = np.concatenate([rng.dirichlet(np.ones(size), size=6) for size in (3, 2, 3)], axis=1)
    age = rng.dirichlet(np.ones(3), size=6)
    trace = MASK.trace(coarse, {"age": age})
    assert trace["age_by"].tolist() == ["specialist"] * 6 and trace["mask_by"].tolist() == ["coarse"] * 6
    assert trace["age"].tolist() == [str(v) for v in age.argmax(1)]
    labels = rng.integers(0, 18, 6)
    section = MASK.stage_report(labels, coarse, {"age": age}, product(MASK, coarse, {"age": age}))
    report = section.to_dict()["heads"]
    assert report["age"]["product"] == report["age"]["specialist"] and "specialist" not in report["mask"]
    assert report["mask"]["product"] == report["mask"]["coarse"]
    assert [line.split()[1] for line in section.text_lines()] == ["mask", "gender", "age"]
    assert section.markdown_intro() == [] and section.markdown_lines()[1].startswith("| head |")


@pytest.mark.parametrize("heads, message", [
    ({"mask": 1}, "at least 2 values"),
    ({"mask": ["a", "a"]}, "value names must differ"),
    ({"a b": 2, "a_b": 2}, "same folder names"),
])
def test_factor_hierarchy_refusals(heads, message):
    with pytest.raises(RecipeError, match=message):
        FactorHierarchy.from_config(heads)


def test_factor_helpers_are_exported_from_the_package():
    import hierclf

    assert hierclf.encode_factors([[2, 1, 0]], (3, 2, 3)).tolist() == [15]
    assert hierclf.decode_factors([15], (3, 2, 3)).tolist() == [[2, 1, 0]]
    assert hierclf.FactorHierarchy is FactorHierarchy
