"""A stage from pretrained weights takes the fine-tuning defaults where its recipe sets nothing."""
import dataclasses
import tomllib

import pytest

from hierclf.recipe import finetuning
from hierclf.recipe.reading import load_recipe, recipe_from_dict
from hierclf.recipe.schema import StageConfig

DATA = {"csv": "train.csv"}
SCHEMA = StageConfig()
TRIED = {"freeze_epochs": 2, "backbone_lr": 0.25, "probe_check": True}
"""Defaults unlike the schema's in every key, so each test sees where they land, whatever the grid chose."""


@pytest.fixture(autouse=True)
def tried_defaults(monkeypatch):
    monkeypatch.setattr(finetuning, "FINE_TUNING", TRIED)


def tuned(stage: StageConfig) -> dict:
    return {key: getattr(stage, key) for key in TRIED}


def test_pretrained_stages_take_the_defaults_and_scratch_ones_do_not():
    assert tuned(recipe_from_dict({"data": DATA, "coarse": {"weights": "w.safetensors"}}).coarse) == TRIED
    assert tuned(recipe_from_dict({"data": DATA, "coarse": {"pretrained": True}}).coarse) == TRIED
    assert tuned(recipe_from_dict({"data": DATA}).coarse) == tuned(SCHEMA)


def test_the_head_alone_leaves_the_backbone_an_epoch():
    def frozen(epochs):
        return recipe_from_dict({"data": DATA, "coarse": {"weights": "w.safetensors", "epochs": epochs}}).coarse
    assert [frozen(epochs).freeze_epochs for epochs in (1, 2, 3, 10)] == [0, 1, 2, 2]


def test_a_key_the_recipe_sets_is_kept_wherever_it_is_set(tmp_path):
    recipe = recipe_from_dict({"data": DATA, "coarse": {"weights": "w.safetensors", "freeze_epochs": 0},
                               "fine": {"backbone_lr": 0.5, "tops": {"probe_check": False}},
                               "hierarchy": {"groups": [[0, 1]], "group_names": ["tops"]}})
    assert recipe.coarse.freeze_epochs == 0 and recipe.coarse.backbone_lr == TRIED["backbone_lr"]
    assert (recipe.fine.freeze_epochs, recipe.fine.backbone_lr) == (0, 0.5)  # [fine] inherits what [coarse] sets
    tops = recipe.specialist("tops")
    assert (tops.freeze_epochs, tops.backbone_lr, tops.probe_check) == (0, 0.5, False)
    path = tmp_path / "r.toml"
    path.write_text('[data]\ncsv = "train.csv"\n[coarse]\nweights = "w.safetensors"\n')
    overridden = load_recipe(path, ["coarse.backbone_lr=1.0"]).coarse
    assert overridden.backbone_lr == 1.0 and overridden.freeze_epochs == TRIED["freeze_epochs"]


def test_a_specialist_from_the_coarse_model_is_not_a_pretrained_start():
    """init_from_coarse starts from the fold's coarse model, not from the weights [coarse] names:
    its keys are the schema's unless a table sets them."""
    recipe = recipe_from_dict({"data": DATA, "coarse": {"weights": "w.safetensors"},
                               "hierarchy": {"groups": [[0, 1]]}, "fine": {"init_from_coarse": True}})
    assert recipe.fine.weights == "" and tuned(recipe.fine) == tuned(SCHEMA)


def test_a_saved_recipe_reads_back_the_same():
    """A run folder's recipe.toml holds every key, so reopening it changes nothing."""
    recipe = recipe_from_dict({"data": DATA, "coarse": {"weights": "w.safetensors"}})
    again = recipe_from_dict(tomllib.loads(recipe.to_toml()))
    assert dataclasses.asdict(again.coarse) == dataclasses.asdict(recipe.coarse) and tuned(again.coarse) == TRIED
