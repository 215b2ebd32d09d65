"""TOML values into typed fields, with messages that say what was expected."""
from typing import Literal, Union

import pytest

from hierclf.recipe.coerce import build_config, check_bounds, coerce, describe, show_value, suggest
from hierclf.errors import RecipeError
from hierclf.recipe.schema import StageConfig


def test_values_are_coerced_to_their_fields_types():
    assert coerce(1, float, "x") == 1.0 and isinstance(coerce(1, float, "x"), float)
    assert coerce([1, 2], tuple[int, ...], "x") == (1, 2)
    assert coerce({"a": 2}, dict[str, Union[int, tuple[str, ...]]], "x") == {"a": 2}
    assert coerce(["a", "b"], Union[int, tuple[str, ...]], "x") == ("a", "b")
    for value, kind in ((True, int), (1, bool), ("1", int), ("cosin", Literal["cosine"]), ([1.5], tuple[int, ...])):
        with pytest.raises(RecipeError, match="^x: expected"):
            coerce(value, kind, "x")


def test_descriptions_read_as_a_recipe_writer_would():
    assert describe(int) == "an integer"
    assert describe(tuple[float, ...]) == "a list of numbers"
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"
    assert describe(Union[Literal["none"], tuple[float, ...]]) == "one of 'none' or a list of numbers"


def test_bounds_and_suggestions():
    check_bounds(0.5, {"gt": 0.0, "lt": 1.0}, "x")
    with pytest.raises(RecipeError, match="x: expected a value > 0"):
        check_bounds(0.0, {"gt": 0.0}, "x")
    with pytest.raises(RecipeError, match="x: expected a value ≤ 3"):
        check_bounds(4, {"hi": 3}, "x")
    assert suggest("epoch", ["epochs", "lr"]) == " (did you mean 'epochs'?)" and suggest("zzz", ["lr"]) == ""
    assert show_value((1, "a")) == '[1, "a"]'


def test_a_config_is_built_from_a_table_inheriting_the_rest():
    base = StageConfig(img_size=64)
    built = build_config(StageConfig, {"epochs": 3}, "fine", "r.toml", inherit=base)
    assert (built.epochs, built.img_size) == (3, 64)
    with pytest.raises(RecipeError, match=r"r.toml: unknown key fine.epoch \(did you mean 'epochs'\?\)"):
        build_config(StageConfig, {"epoch": 3}, "fine", "r.toml")
    with pytest.raises(RecipeError, match='overrides fine.epochs="x": expected an integer'):
        build_config(StageConfig, {"epochs": "x"}, "fine", "r.toml", overridden={"fine.epochs"})
    with pytest.raises(RecipeError, match="r.toml: fine must be a table"):
        build_config(StageConfig, 3, "fine", "r.toml")
