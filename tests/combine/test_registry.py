"""The combiner registry: every combiner by name, and which combine each kind of hierarchy."""
import pytest

from hierclf.combine.registry import COMBINERS, applicable, choose_combiner
from hierclf.errors import RecipeError
from hierclf.hierarchy.factors import FactorHierarchy
from hierclf.hierarchy.groups import GroupHierarchy
from hierclf.recipe.schema import CombineConfig

FIVE = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"))
FIVE_OVER_FLAT = GroupHierarchy.from_config([[1, 3]], ["odd"], ("a", "b", "c", "d", "e"), flat_coarse=True)
MASK = FactorHierarchy.from_config({"mask": 3, "gender": 2, "age": 3})


def test_one_registry_names_every_combiner_and_the_recipe_takes_its_names():
    assert list(COMBINERS) == ["flat", "product", "routed", "stacking", "blend", "coarse"]
    assert [cls.name for cls in COMBINERS.values()] == list(COMBINERS)
    config = CombineConfig(route_threshold=0.3, stacking_c=0.5)
    assert COMBINERS["routed"].from_config(config).threshold == 0.3
    assert COMBINERS["stacking"].from_config(config).c == 0.5
    assert [name for name, cls in COMBINERS.items() if cls.fits] == ["stacking", "blend"]


def test_which_combiners_apply_follows_from_the_hierarchys_terms():
    assert applicable(GroupHierarchy(("a", "b"))) == ("flat",)
    assert applicable(FIVE) == ("product", "routed", "stacking")
    assert applicable(FIVE_OVER_FLAT) == ("product", "routed", "stacking", "blend", "coarse")
    # no router: nothing to route, nothing to blend; the coarse heads alone give every class
    assert applicable(MASK) == ("product", "stacking", "coarse")


def test_a_combiner_that_cannot_combine_a_hierarchy_is_refused_naming_what_it_needs():
    assert choose_combiner(FIVE, "routed", "--combiner 'routed'") == "routed"
    assert choose_combiner(GroupHierarchy(("a", "b")), "routed", "x") == "flat"  # a flat run has one pipeline
    with pytest.raises(RecipeError, match=r"--combiner 'routed': routed needs groups \(with attribute heads there "
                                          r"is nothing to route\); a run with attribute heads mask, gender, age "
                                          r"combines by product, stacking, coarse"):
        choose_combiner(MASK, "routed", "--combiner 'routed'")
    with pytest.raises(RecipeError, match="--combiner 'flat': flat is the pipeline of a run without groups or heads; "
                                          "a run with groups odd combines by product, routed, stacking"):
        choose_combiner(FIVE, "flat", "--combiner 'flat'")
    with pytest.raises(RecipeError, match=r"blend needs groups over a flat run \(hierarchy.coarse_run\)"):
        choose_combiner(FIVE, "blend", "--combiner 'blend'")
    with pytest.raises(RecipeError, match=r"coarse needs a coarse stage that gives every class itself"):
        choose_combiner(FIVE, "coarse", "--combiner 'coarse'")  # its coarse stage gives the groups only
    with pytest.raises(RecipeError, match="no such combiner; combiners are flat, product, routed, stacking, blend, "
                                          "coarse"):
        choose_combiner(FIVE, "average", "--combiner 'average'")
