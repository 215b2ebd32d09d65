"""`--set section.key=value`, checked like the file's own keys."""
import pytest

from hierclf.errors import RecipeError
from hierclf.recipe.overrides import apply_override, parse_override
from hierclf.recipe.reading import load_recipe

HEADS = '[hierarchy]\nheads = { mask = ["wear", "incorrect", "not_wear"], gender = 2, age = 3 }\n'


def test_values_are_read_as_toml_else_as_text():
    assert parse_override("folds.seed = 7") == (["folds", "seed"], 7)
    assert parse_override("coarse.model=resnet18") == (["coarse", "model"], "resnet18")
    assert parse_override("fine.certs.img_size=64") == (["fine", "certs", "img_size"], 64)
    raw = {"coarse": {"lr": 1.0}}
    assert apply_override(raw, "fine.certs.lr=0.5") == ["fine", "certs", "lr"]
    assert raw == {"coarse": {"lr": 1.0}, "fine": {"certs": {"lr": 0.5}}}
    for text, message in (("epochs3", "section.key=value"), ("heads.weight=1", "heads.HEAD.key=value"),
                          ("corse.lr=1", "unknown section 'corse' \\(did you mean 'coarse'\\?\\)")):
        with pytest.raises(RecipeError, match=message):
            apply_override({}, text)
    with pytest.raises(RecipeError, match="coarse in the recipe is not a table"):
        apply_override({"coarse": 3}, "coarse.lr=1")


def test_overrides_apply_and_are_checked(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[data]\ncsv = "a.csv"\n')
    recipe = load_recipe(path, ["coarse.epochs=3", "coarse.model=resnet10t", "coarse.amp=false"])
    assert (recipe.coarse.epochs, recipe.coarse.model, recipe.coarse.amp) == (3, "resnet10t", False)
    with pytest.raises(RecipeError, match='overrides coarse.epochs="x": expected an integer'):
        load_recipe(path, ["coarse.epochs=x"])
    with pytest.raises(RecipeError, match="unknown key coarse.epoch"):
        load_recipe(path, ["coarse.epoch=3"])


def test_paths_in_overrides_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "r.toml"
    path.write_text('[data]\ncsv = "a.csv"\n')
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(path, ["data.csv=other.csv"])
    assert recipe.data.csv == str(tmp_path / "other.csv")
    assert load_recipe(path).data.csv == str(tmp_path / "sub" / "a.csv")


def test_heads_overrides_are_checked(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(HEADS)
    assert load_recipe(path, ["heads.age.weight=3"]).head("age").weight == 3.0
    with pytest.raises(RecipeError, match="overrides heads.age.weight=-1: expected a value ≥ 0"):
        load_recipe(path, ["heads.age.weight=-1"])
