import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hierclf.errors import RecipeError
from hierclf.recipe import (Recipe, StageConfig, key_reference, key_reference_markdown, load_recipe,                             parse_override, recipe_differences, recipe_from_dict)

REPO = Path(__file__).resolve().parents[1]


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
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.coarse.epochs = 4


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
    ('[data]\ncsv = "a.csv"\nfolder = "b"\n', ["data.csv and data.folder are both set"]),
    ('[data]\ncsv = "a.csv"\n[hierarchy]\ngroups = [[1, 2.5]]\n', ["hierarchy.groups", "a list of"]),
    ('[data\n', ["not valid TOML"]),
    ('[data]\ncsv = "a.csv"\n[coarse]\nlr = 1e-7\n', ["coarse.min_lr = 1e-06 is not below coarse.lr = 1e-07"]),
])
def test_bad_recipes_name_the_key(tmp_path, text, fragments):
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path, text))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_overrides_apply_and_are_checked(tmp_path):
    path = write(tmp_path, '[data]\ncsv = "a.csv"\n')
    recipe = load_recipe(path, ["coarse.epochs=3", "coarse.model=resnet10t", "coarse.amp=false"])
    assert (recipe.coarse.epochs, recipe.coarse.model, recipe.coarse.amp) == (3, "resnet10t", False)
    with pytest.raises(RecipeError, match='--set coarse.epochs="x": expected an integer'):
        load_recipe(path, ["coarse.epochs=x"])
    with pytest.raises(RecipeError, match="unknown key coarse.epoch"):
        load_recipe(path, ["coarse.epoch=3"])
    with pytest.raises(RecipeError, match="section.key=value"):
        load_recipe(path, ["epochs3"])
    assert parse_override("folds.seed = 7") == (["folds", "seed"], 7)


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


def test_toml_round_trip():
    recipe = recipe_from_dict({"data": {"csv": "/x.csv"}, "hierarchy": {"groups": [[3, "seven"]]}})
    import tomllib
    assert recipe_from_dict(tomllib.loads(recipe.to_toml())) == recipe


def test_every_key_is_documented():
    """docs/recipes.md carries the generated key tables verbatim: adding a key without its doc fails."""
    reference = (REPO / "docs" / "recipes.md").read_text()
    generated = key_reference_markdown()
    assert generated in reference
    for section, keys in key_reference().items():
        for name, _, doc in keys:
            assert doc.strip(), f"{section}.{name} has no documentation"


def test_cli_reports_a_bad_key_in_one_line_with_exit_2(tmp_path):
    recipe = write(tmp_path, '[data]\ncsv = "a.csv"\n[coarse]\nbatchsize = 8\n')
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "hierclf", "fit-coarse", str(recipe), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert "coarse.batchsize" in done.stderr and "batch_size" in done.stderr
    assert not out.exists()


def test_fine_inherits_coarse_and_groups_inherit_fine(tmp_path):
    path = write(tmp_path, '[data]\ncsv = "a.csv"\n[coarse]\nmodel = "resnet18"\nimg_size = 64\npretrained = true\n'
                           '[fine]\nepochs = 40\n[fine.certs]\nimg_size = 128\nweights = "w.safetensors"\n')
    recipe = load_recipe(path, ["fine.certs.lr=1e-4", "fine.batch_size=8"])
    assert (recipe.fine.model, recipe.fine.img_size, recipe.fine.epochs, recipe.fine.batch_size) == \
        ("resnet18", 64, 40, 8)
    certs = recipe.specialist("certs")
    assert (certs.model, certs.img_size, certs.epochs, certs.lr) == ("resnet18", 128, 40, 1e-4)
    assert certs.weights == str(tmp_path / "w.safetensors") and not certs.pretrained
    assert recipe.specialist("other") == recipe.fine
    import tomllib
    assert recipe_from_dict(tomllib.loads(recipe.to_toml())) == recipe
    with pytest.raises(RecipeError, match="unknown key fine.certs.imgsize"):
        load_recipe(path, ["fine.certs.imgsize=3"])
    with pytest.raises(RecipeError, match='--set fine.epochs="x": expected an integer'):
        load_recipe(path, ["fine.epochs=x"])
    assert recipe.combine.method == "product"


def test_init_from_coarse_is_checked(tmp_path):
    base = '[data]\ncsv = "a.csv"\n[coarse]\nmodel = "test_resnet"\n'
    with pytest.raises(RecipeError, match="coarse.init_from_coarse applies to specialists"):
        load_recipe(write(tmp_path, base + "init_from_coarse = true\n"))
    with pytest.raises(RecipeError, match="fine.init_from_coarse needs the coarse stage's model"):
        load_recipe(write(tmp_path, base + '[fine]\ninit_from_coarse = true\nmodel = "resnet18"\n'))
    assert load_recipe(write(tmp_path, base + "[fine]\ninit_from_coarse = true\nimg_size = 64\n")).fine.init_from_coarse


HEADS = '[hierarchy]\nheads = { mask = ["wear", "incorrect", "not_wear"], gender = 2, age = 3 }\n'


def test_heads_and_their_losses(tmp_path):
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
    assert changed.head("age").weight == 3.0
    assert recipe_differences(load_recipe(write(tmp_path, HEADS)), changed) == ["heads.age.weight: 1.0 → 3.0"]


@pytest.mark.parametrize("text, message", [
    (HEADS + "[heads.agee]\nweight = 1\n", r"\[heads.agee\]: there is no head 'agee' \(did you mean 'age'\?\)"),
    ("[heads.age]\nweight = 1\n", "heads are none"),
    (HEADS + '[hierarchy.x]\n', "hierarchy.x"),
    ('[hierarchy]\ngroups = [[0, 1]]\nheads = { a = 2 }\n', "hierarchy.groups and hierarchy.heads are both set"),
    ('[hierarchy]\nheads = { a = 1 }\n', "hierarchy.heads.a = 1: a head needs at least 2 values"),
    ("[hierarchy]\nheads = { a = true }\n", r"\(a\): expected an integer or a list of strings"),
    ('[hierarchy]\nseparate = true\n', "hierarchy.separate applies to hierarchy.heads"),
    (HEADS + '[data]\nclass_names = ["a"]\n', "class names come from the heads"),
    (HEADS + "[heads.age]\nweight_schedule = [[0, 1]]\n", r"expected \[epoch, weight\] pairs"),
    (HEADS + "[heads.age]\nweight_schedule = [[3, 1], [2, 1]]\n", "epochs must increase"),
    (HEADS + "[heads.mask]\nweight = 0\n[heads.gender]\nweight = 0\n[heads.age]\nweight = 0\n", "weight is 0 in epoch 1"),
    ('[coarse]\nclass_weights = "heavy"\n', "coarse.class_weights"),
    ('[data]\ncsv = "a.csv"\nmask_images = "images"\n', "data.csv and data.mask_images are both set"),
    ('[data]\nage_bounds = [60, 30]\n', "expected increasing positive ages"),
    (HEADS + '[combine]\nmethod = "routed"\n', "combine.method = \"routed\" needs groups"),
])
def test_head_recipe_refusals(tmp_path, text, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(write(tmp_path, text))


def test_heads_overrides_are_checked(tmp_path):
    with pytest.raises(RecipeError, match="--set heads.age.weight=-1: expected a value ≥ 0"):
        load_recipe(write(tmp_path, HEADS), ["heads.age.weight=-1"])
    with pytest.raises(RecipeError, match="heads.HEAD.key=value"):
        load_recipe(write(tmp_path, HEADS), ["heads.weight=1"])
