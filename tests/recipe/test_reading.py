"""Reading a recipe: TOML, paths, inheritance between tables, and errors that name the key."""
import tomllib
from pathlib import Path

import pytest

from hierclf.errors import RecipeError
from hierclf.recipe.schema import Recipe, StageConfig
from hierclf.recipe.reading import load_recipe, recipe_from_dict
from hierclf.run.folder import recipe_differences

REPO = Path(__file__).resolve().parents[2]
HEADS = '[hierarchy]\nheads = { mask = ["wear", "incorrect", "not_wear"], gender = 2, age = 3 }\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_defaults_and_types(tmp_path):
    recipe = load_recipe(write(tmp_path, '[data]\ncsv = "train.csv"\n[coarse]\nepochs = 3\nlr = 1\n'))
    assert recipe.coarse.epochs == 3
    assert recipe.coarse.lr == 1.0 and isinstance(recipe.coarse.lr, float)
    assert recipe.coarse.model == StageConfig().model
    assert recipe.folds.count == 5


def test_paths_from_python_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = recipe_from_dict({"data": {"csv": "d/train.csv"}, "fine": {"x": {"weights": "w.pth"}}})
    assert recipe.data.csv == str(tmp_path / "d" / "train.csv")
    assert recipe.specialist("x").weights == str(tmp_path / "w.pth")


def test_paths_resolve_against_the_recipe_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    recipe = load_recipe(write(tmp_path / "sub", '[data]\ncsv = "../d/train.csv"\n'))
    assert recipe.data.csv == str((tmp_path / "d" / "train.csv").resolve())


@pytest.mark.parametrize("text, fragments", [
    ('[data]\ncsv = "a.csv"\n[coarse]\nepoch = 3\n', ["coarse.epoch", "did you mean 'epochs'", "r.toml"]),
    ('[data]\ncsv = "a.csv"\n[coarse]\nepochs = "many"\n', ["coarse.epochs", "an integer"]),
    ('[data]\ncsv = "a.csv"\n[coarse]\nepochs = 0\n', ["coarse.epochs = 0", "≥ 1"]),
    ('[data]\ncsv = "a.csv"\n[coarse]\nlr = -1\n', ["coarse.lr", "> 0"]),
    ('[data]\ncsv = "a.csv"\n[coarse]\nscheduler = "cosin"\n', ["coarse.scheduler", "'cosine_restarts'"]),
    ('[data]\ncsv = "a.csv"\n[coarse]\namp = 1\n', ["coarse.amp", "true or false"]),
    ('[data]\ncsv = "a.csv"\n[corse]\nepochs = 1\n', ["unknown section [corse]", "did you mean 'coarse'"]),
    ('[data]\ncsv = "a.csv"\n[hierarchy]\ngroups = [[1, 2.5]]\n', ["hierarchy.groups", "a list of"]),
    ('[data\n', ["not valid TOML"]),
    ('[combine]\nmethod = "average"\n', ["combine.method", "'stacking'"]),
    ('data = 3\n', ["data must be a table"]),
    (HEADS + "[heads.agee]\nweight = 1\n", ["[heads.agee]: there is no head 'agee' (did you mean 'age'?)"]),
    ("[heads.age]\nweight = 1\n", ["heads are none"]),
    ("[hierarchy]\nheads = { a = true }\n", ["(a): expected an integer or a list of strings"]),
])
def test_bad_recipes_name_the_key(tmp_path, text, fragments):
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_a_missing_or_unreadable_recipe(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(RecipeError, match="cannot be read"):
        load_recipe(tmp_path / "bad.toml")


def test_shipped_recipes_load():
    for path in sorted((REPO / "recipes").glob("*.toml")):
        assert isinstance(load_recipe(path), Recipe), path
    documents = load_recipe(REPO / "recipes" / "documents-17.toml")
    stage = documents.coarse
    assert (stage.model, stage.img_size, stage.optimizer, stage.lr, stage.weight_decay) == \
        ("efficientnet_b3", 384, "adamw", 1e-4, 1e-4)
    assert (stage.scheduler, stage.restart_epochs, stage.restart_mult, stage.min_lr) == \
        ("cosine_restarts", 10, 2.0, 1e-6)
    assert (stage.monitor, stage.patience, stage.min_delta, documents.folds.count) == \
        ("val_macro_f1", 7, 0.005, 5)
    assert stage.augment == "document" and documents.predict.tta == ("rot90", "rot180", "rot270")
    mask = load_recipe(REPO / "recipes" / "mask-18.toml")
    assert list(mask.hierarchy.heads) == ["mask", "gender", "age"] and mask.data.mask_images
    assert (mask.head("age").label_smoothing, mask.head("age").class_weights) == (0.1, "balanced")
    assert mask.specialist_names == ("age",) and mask.specialist("age").init_from_coarse


def test_fine_inherits_coarse_and_groups_inherit_fine(tmp_path):
    path = write(tmp_path, '[data]\ncsv = "a.csv"\n[coarse]\nmodel = "resnet18"\nimg_size = 64\npretrained = true\n'
                           '[fine]\nepochs = 40\n[fine.certs]\nimg_size = 128\nweights = "w.safetensors"\n')
    recipe = load_recipe(path, ["fine.certs.lr=1e-4", "fine.batch_size=8"])
    assert (recipe.fine.model, recipe.fine.img_size, recipe.fine.epochs, recipe.fine.batch_size) == \
        ("resnet18", 64, 40, 8)
    certs = recipe.specialist("certs")
    assert (certs.model, certs.img_size, certs.epochs, certs.lr) == ("resnet18", 128, 40, 1e-4)
    assert certs.weights == str(tmp_path / "w.safetensors") and not certs.pretrained  # weights clear pretrained
    assert recipe.specialist("other") == recipe.fine
    assert recipe_from_dict(tomllib.loads(recipe.to_toml())) == recipe
    with pytest.raises(RecipeError, match="unknown key fine.certs.imgsize"):
        load_recipe(path, ["fine.certs.imgsize=3"])
    with pytest.raises(RecipeError, match='overrides fine.epochs="x": expected an integer'):
        load_recipe(path, ["fine.epochs=x"])
    assert recipe.combine.method == "product"
    listed = recipe_from_dict({"coarse": {"augment": [{"name": "Affine", "rotate": [-10, 10], "p": 0.5}]}})
    assert recipe_from_dict(tomllib.loads(listed.to_toml())).coarse.augment == listed.coarse.augment


def test_a_specialist_started_from_the_coarse_model_does_not_inherit_its_weights_file(tmp_path):
    # a pretrained coarse stage from a local file (recipes/fashion-mnist-lite0.toml), then
    # specialists that start from each fold's coarse model, set in [fine] or by --set
    path = write(tmp_path, '[data]\ncsv = "a.csv"\n[coarse]\nmodel = "resnet18"\nweights = "w.safetensors"\n'
                           '[hierarchy]\ngroups = [["a", "b"]]\ngroup_names = ["ab"]\n'
                           '[fine]\ninit_from_coarse = true\n')
    recipe = load_recipe(path)
    assert recipe.coarse.weights == str(tmp_path / "w.safetensors")
    assert recipe.fine.weights == "" and recipe.specialist("ab").weights == ""
    path.write_text(path.read_text().replace("[fine]\ninit_from_coarse = true\n", ""))
    assert load_recipe(path, ["fine.ab.init_from_coarse=true"]).specialist("ab").weights == ""
    with pytest.raises(RecipeError, match="init_from_coarse and fine.weights are both set"):
        load_recipe(path, ["fine.init_from_coarse=true", "fine.weights=w.safetensors"])


def test_heads_inherit_the_coarse_loss_keys(tmp_path):
    recipe = load_recipe(write(tmp_path, HEADS + '[coarse]\nlabel_smoothing = 0.05\nloss = "focal"\n'
                                       '[heads.age]\nlabel_smoothing = 0.1\nweight_schedule = [[1, 0.5], [4, 2]]\n'
                                       '[heads.gender]\nclass_weights = "balanced"\n'))
    assert recipe.hierarchy.heads == {"mask": ("wear", "incorrect", "not_wear"), "gender": 2, "age": 3}
    assert [name for name, _ in recipe.heads] == ["mask", "gender", "age"]  # every head, in order
    mask, age = recipe.head("mask"), recipe.head("age")
    assert (mask.label_smoothing, mask.loss) == (0.05, "focal")  # inherited from [coarse]
    assert age.label_smoothing == 0.1 and [age.weight_at(e) for e in (1, 3, 4, 9)] == [0.5, 0.5, 2.0, 2.0]
    assert recipe.head("gender").class_weights == "balanced"
    again = recipe_from_dict(tomllib.loads(recipe.to_toml()))
    assert again.heads == recipe.heads and again.hierarchy == recipe.hierarchy
    changed = load_recipe(write(tmp_path, HEADS), ["heads.age.weight=3"])
    assert recipe_differences(load_recipe(write(tmp_path, HEADS)), changed) == ["heads.age.weight: 1.0 → 3.0"]


@pytest.mark.parametrize("text, message", [
    ("[coarse]\nmodel = " + "[" * 70000 + "]" * 70000 + "\n", "nested deeper than a recipe may be"),
    ("[coarse]\nmodel = " + "{a = " * 20000 + "1" + "}" * 20000 + "\n", "nested deeper than a recipe may be"),
    ("[coarse]\nmodel = " + "[" * 12 + "]" * 12 + "\n", "coarse.model is nested deeper than the 8 levels"),
    ('[data]\ncsv = "' + "x" * 3_000_000 + '"\n', "data.csv holds 3,000,000 characters, more than the 4,096"),
])
def test_hostile_recipes_end_in_one_short_line(tmp_path, text, message):
    """A 196 KB file of nested arrays ended in RecursionError; a 3 MB value in MemoryError or a
    3 MB error line."""
    with pytest.raises(RecipeError, match=message) as caught:
        load_recipe(write(tmp_path, text))
    assert len(str(caught.value)) < 400


def test_an_overlong_or_deep_set_value_is_refused_naming_it(tmp_path):
    path = write(tmp_path, '[data]\ncsv = "a.csv"\n')
    with pytest.raises(RecipeError, match="overrides coarse.model=…: its value holds 5,000 characters"):
        load_recipe(path, ["coarse.model=" + "x" * 5000])
    with pytest.raises(RecipeError, match="coarse.model is nested deeper than the 8 levels"):
        load_recipe(path, ["coarse.model=" + "[" * 10 + "]" * 10])


def test_a_recipe_saved_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'[data]\ncsv = "a.csv"\n[coarse]\nepochs = 3\n')
    assert load_recipe(path).coarse.epochs == 3
