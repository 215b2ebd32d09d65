"""The rules that tie keys together, checked once a whole recipe is built."""
from pathlib import Path

import pytest

from hierclf.errors import RecipeError
from hierclf.recipe.reading import load_recipe, recipe_from_dict

HEADS = '[hierarchy]\nheads = { mask = ["wear", "incorrect", "not_wear"], gender = 2, age = 3 }\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ('[data]\ncsv = "a.csv"\nfolder = "b"\n', "data.csv and data.folder are both set"),
    ('[data]\ncsv = "a.csv"\nmask_images = "images"\n', "data.csv and data.mask_images are both set"),
    ('[data]\nimages = "i"\n', "data.images only applies with data.csv"),
    ('[data]\nage_bounds = [60, 30]\n', "expected increasing positive ages"),
    ('[coarse]\nlr = 1e-7\n', "coarse.min_lr = 1e-06 is not below coarse.lr = 1e-07"),
    ('[coarse]\npretrained = true\nweights = "w.pth"\n', "coarse.pretrained and coarse.weights are both set"),
    ('[coarse]\nin_chans = 2\n', "expected 1 (greyscale) or 3 (RGB)"),
    ('[coarse]\nfreeze_epochs = 10\nepochs = 10\n', "coarse.freeze_epochs = 10 leaves no epoch"),
    ('[predict]\ntta = ["hflip", "rot45"]\n', "predict.tta: unknown TTA variant 'rot45'"),
    ('[hierarchy]\ngroups = [[0, 1]]\ngroup_names = ["a", "b"]\n', "group_names has 2 names for 1 groups"),
    ('[hierarchy]\ngroups = [[0, 1]]\nheads = { a = 2 }\n', "hierarchy.groups and hierarchy.heads are both set"),
    ('[hierarchy]\nheads = { a = 1 }\n', "hierarchy.heads.a = 1: a head needs at least 2 values"),
    ('[hierarchy]\nseparate = true\n', "hierarchy.separate applies to hierarchy.heads"),
    (HEADS + '[data]\nclass_names = ["a"]\n', "class names come from the heads"),
    (HEADS + "[heads.age]\nweight_schedule = [[0, 1]]\n", "expected [epoch, weight] pairs"),
    (HEADS + "[heads.age]\nweight_schedule = [[3, 1], [2, 1]]\n", "epochs must increase"),
    (HEADS + "[heads.mask]\nweight = 0\n[heads.gender]\nweight = 0\n[heads.age]\nweight = 0\n",
     "weight is 0 in epoch 1"),
    ('[coarse]\nclass_weights = "heavy"\n', "coarse.class_weights"),
])
def test_refusals_name_the_keys(tmp_path, text, message):
    with pytest.raises(RecipeError) as caught:
        load_recipe(write(tmp_path, text))
    assert message in str(caught.value) and "r.toml" in str(caught.value)


def test_init_from_coarse_is_checked(tmp_path):
    base = '[data]\ncsv = "a.csv"\n[coarse]\nmodel = "test_resnet"\n'
    with pytest.raises(RecipeError, match="coarse.init_from_coarse applies to specialists"):
        load_recipe(write(tmp_path, base + "init_from_coarse = true\n"))
    with pytest.raises(RecipeError, match="fine.init_from_coarse needs the coarse stage's model"):
        load_recipe(write(tmp_path, base + '[fine]\ninit_from_coarse = true\nmodel = "resnet18"\n'))
    with pytest.raises(RecipeError, match="fine.init_from_coarse and fine.weights are both set"):
        load_recipe(write(tmp_path, base + '[fine]\ninit_from_coarse = true\nweights = "w.pth"\n'))
    assert load_recipe(write(tmp_path, base + "[fine]\ninit_from_coarse = true\nimg_size = 64\n")).fine.init_from_coarse


@pytest.mark.parametrize("entry, message", [
    ({"name": "HorizontalFlp"}, "albumentations has no transform 'HorizontalFlp' (did you mean 'HorizontalFlip'?)"),
    ({"name": "Affine", "rotte": 10}, "Affine: got an unexpected keyword argument 'rotte'"),
    ({"name": "GaussNoise", "std_range": [2, 1]}, "GaussNoise(std_range=(2, 1)) is refused by albumentations"),
    ({"p": 0.5}, "each transform needs name"),
])
def test_a_bad_augment_list_is_refused_with_the_key(entry, message):
    with pytest.raises(RecipeError) as caught:
        recipe_from_dict({"coarse": {"augment": [{"name": "HorizontalFlip"}, entry]}}, source="r.toml")
    assert "r.toml: coarse.augment[1]" in str(caught.value) and message in str(caught.value)


def test_heads_take_a_flat_recipes_class_names_when_they_are_the_joint_ones():
    """A flat recipe over the joint classes, in the heads' order, reused with heads: the same labels."""
    heads = {"gender": ["male", "female"], "age": ["<30", ">=30"]}
    joint = ["male/<30", "male/>=30", "female/<30", "female/>=30"]
    recipe = recipe_from_dict({"data": {"csv": "a.csv", "class_names": joint}, "hierarchy": {"heads": heads}})
    assert recipe.hierarchy.heads == {"gender": ("male", "female"), "age": ("<30", ">=30")}
    with pytest.raises(RecipeError, match="class names come from the heads \\(male/<30, male/>=30, female/<30"):
        recipe_from_dict({"data": {"csv": "a.csv", "class_names": joint[::-1]}, "hierarchy": {"heads": heads}})
