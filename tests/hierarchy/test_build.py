"""The only factory that chooses a kind of hierarchy, from a recipe and the data's classes."""
import pytest

from hierclf.errors import RecipeError
from hierclf.hierarchy.build import build_hierarchy, label_attributes
from hierclf.hierarchy.factors import FactorHierarchy
from hierclf.hierarchy.groups import GroupHierarchy
from hierclf.recipe.reading import recipe_from_dict


def test_build_hierarchy_checks_the_datas_classes():
    config = recipe_from_dict({"hierarchy": {"heads": {"a": 2, "b": 2}}}).hierarchy
    assert isinstance(build_hierarchy(config, ("0", "1", "2", "3")), FactorHierarchy)
    named = recipe_from_dict({"hierarchy": {"heads": {"a": ["x", "y"], "b": 2}}}).hierarchy
    assert build_hierarchy(named, ("0", "1", "2", "3")).class_names[0] == "x/0"  # joint indices take the heads' names
    with pytest.raises(RecipeError, match=r"hierarchy.heads make 4 joint classes .* but the data's labels run 0..2"):
        build_hierarchy(named, ("0", "1", "2"))  # the heads' product must be the classes: no empty joint class
    with pytest.raises(RecipeError, match="hierarchy.heads make 4 classes .* but the data has 3"):
        build_hierarchy(named, ("a", "b", "c"))
    grouped = recipe_from_dict({"hierarchy": {"groups": [["a", "b"]]}}).hierarchy
    assert isinstance(build_hierarchy(grouped, ("a", "b", "c")), GroupHierarchy)


def test_a_flat_coarse_run_is_for_groups_only():
    config = recipe_from_dict({"hierarchy": {"heads": {"a": 2, "b": 2}, "coarse_run": "/runs/flat"}}).hierarchy
    with pytest.raises(RecipeError, match="coarse_run: a flat run can be the coarse stage of groups, not of heads"):
        build_hierarchy(config, ("0", "1", "2", "3"))
    config = recipe_from_dict({"hierarchy": {"coarse_run": "/runs/flat"}}).hierarchy
    with pytest.raises(RecipeError, match="needs groups for specialists to refine"):
        build_hierarchy(config, ("a", "b"))


def test_label_attributes_are_the_heads_before_any_data_is_read():
    heads = recipe_from_dict({"hierarchy": {"heads": {"mask": ["wear", "none"], "age": 3}}}).hierarchy
    assert [(a.name, a.values) for a in label_attributes(heads)] == [("mask", ("wear", "none")),
                                                                     ("age", ("0", "1", "2"))]
    assert label_attributes(recipe_from_dict({"hierarchy": {"groups": [["a", "b"]]}}).hierarchy) == ()
