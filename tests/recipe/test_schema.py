"""The recipe schema: typed, frozen config objects, a stage table made of the slices training reads."""
import dataclasses
import tomllib

import pytest

from hierclf.recipe.schema import (LoaderConfig, LossConfig, MixConfig, ModelConfig, OptimizerConfig, Recipe, ScheduleConfig,
                            StageConfig, TrainConfig)
from hierclf.recipe.reading import recipe_from_dict


def test_configs_are_frozen_with_documented_defaults():
    stage = StageConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        stage.epochs = 4
    assert (stage.model, stage.epochs, stage.lr) == ("resnet18", 10, 1e-3)
    for item in dataclasses.fields(StageConfig):
        assert item.metadata["doc"].strip(), item.name


def test_a_stage_is_made_of_slices_that_share_no_key():
    slices = (ModelConfig, OptimizerConfig, ScheduleConfig, MixConfig, LoaderConfig, LossConfig)
    own = {cls: {f.name for f in dataclasses.fields(cls)} for cls in slices}
    for cls in slices:
        assert issubclass(StageConfig, cls)
        for other in slices:
            assert cls is other or not own[cls] & own[other], (cls, other)
    assert issubclass(StageConfig, TrainConfig) and issubclass(TrainConfig, OptimizerConfig)
    # what fit reads is a TrainConfig: a test of the loop builds one without model or loader keys
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    assert "epochs" in train_keys and "model" not in train_keys and "batch_size" not in train_keys
    union = set().union(*own.values()) | train_keys | {"device", "seed", "probe_check", "tensorboard"}
    assert union == {f.name for f in dataclasses.fields(StageConfig)}


def test_specialists_seeds_and_the_toml_round_trip():
    recipe = recipe_from_dict({"data": {"csv": "/x.csv"}, "hierarchy": {"groups": [[3, "seven"]]},
                               "fine": {"epochs": 4, "certs": {"img_size": 64}}})
    assert recipe.specialist("certs").img_size == 64 and recipe.specialist("other") == recipe.fine
    assert recipe.specialist_names == ("certs",)
    seeded = recipe.with_seed(7)
    assert {seeded.coarse.seed, seeded.fine.seed, seeded.specialist("certs").seed} == {7}
    assert seeded.folds == recipe.folds  # runs that differ only in seed share folds
    assert recipe_from_dict(tomllib.loads(recipe.to_toml())) == recipe
    assert isinstance(recipe, Recipe)
