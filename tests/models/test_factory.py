"""timm models for any output layout, local weight files, saving and loading."""
import json

import pytest
import torch
from safetensors.torch import save_file

from hierclf.errors import RecipeError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.factory import classifier_modules, create_model
from hierclf.models.saved import load_model, save_model
from hierclf.models.weights import load_weights_file
from hierclf.recipe.schema import StageConfig

STAGE = StageConfig(model="test_resnet", img_size=16, in_chans=3)
ABC = OutputLayout.single(("a", "b", "c"))
AB = OutputLayout.single(("a", "b"))
HEADS = OutputLayout.of_heads([("mask", ("m0", "m1", "m2")), ("gender", ("g0", "g1")), ("age", ("a0", "a1", "a2"))])


class Sneaky:
    """An arbitrary object: loading it would need a full unpickle."""


def test_create_model_and_spec():
    model, spec = create_model(STAGE, ABC)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    assert spec.num_classes == 3 and spec.class_names == ("a", "b", "c") and len(spec.mean) == 3
    grey, grey_spec = create_model(StageConfig(model="test_resnet", in_chans=1), AB)
    assert grey(torch.zeros(2, 1, 16, 16)).shape == (2, 2) and len(grey_spec.mean) == 1
    vit, _ = create_model(StageConfig(model="test_vit", img_size=32), AB)
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 2)  # fixed-size models are told the size


def test_initial_weights_come_from_the_seed_alone():
    torch.manual_seed(1)
    first, _ = create_model(STAGE, ABC, seed=3)
    torch.manual_seed(2)  # the global generator plays no part
    again, _ = create_model(STAGE, ABC, seed=3)
    other, _ = create_model(STAGE, ABC, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    assert not torch.equal(first.fc.weight, other.fc.weight)


def test_unknown_architecture_suggests_names():
    with pytest.raises(RecipeError, match="coarse.model = 'test_resnt': timm has no such model.*test_resnet"):
        create_model(StageConfig(model="test_resnt"), AB)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_offline(tmp_path, suffix):
    source, _ = create_model(STAGE, OutputLayout.single(tuple("abcde")))  # another head size: must be left out
    state = source.state_dict()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model, _ = create_model(StageConfig(model="test_resnet", img_size=16, weights=str(path)), ABC)
    loaded = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert backbone and all(torch.equal(loaded[k], state[k]) for k in backbone)
    assert loaded["fc.weight"].shape == (3, source.fc.in_features)


def test_weights_that_fit_nothing_or_need_pickle_are_refused(tmp_path):
    save_file({"unrelated": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(RecipeError, match="no tensor in it fits"):
        create_model(StageConfig(model="test_resnet", weights=str(tmp_path / "other.safetensors")), AB)
    torch.save({"state_dict": {}, "payload": Sneaky()}, tmp_path / "pickled.pth")
    with pytest.raises(RecipeError, match="cannot read weights"):
        create_model(StageConfig(model="test_resnet", weights=str(tmp_path / "pickled.pth")), AB)
    with pytest.raises(RecipeError, match="does not exist"):
        create_model(StageConfig(model="test_resnet", weights=str(tmp_path / "missing.pth")), AB)


def test_save_and_load_round_trip(tmp_path):
    model, spec = create_model(STAGE, AB)
    save_model(tmp_path, model, spec)
    loaded, loaded_spec = load_model(tmp_path, torch.device("cpu"))
    assert loaded_spec == spec
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    assert torch.allclose(model(x), loaded(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "weights.safetensors"]


@pytest.mark.parametrize("separate", [False, True])
def test_attribute_heads_side_by_side_and_back_from_disk(tmp_path, separate):
    model, spec = create_model(STAGE, HEADS, separate=separate)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 8)
    assert spec.layout == HEADS and spec.separate == separate
    names = model.state_dict().keys()
    if separate:  # one whole model per attribute
        assert {name.split(".")[1] for name in names} == {"mask", "gender", "age"}
        assert any(name.startswith("models.age.fc.") for name in names)
    else:  # one backbone, three linear heads
        assert {name.split(".")[0] for name in names} == {"backbone", "heads"}
        assert model.heads["gender"].out_features == 2
    assert len(classifier_modules(model)) == 3
    save_model(tmp_path, model, spec)
    loaded, loaded_spec = load_model(tmp_path, torch.device("cpu"))
    assert loaded_spec == spec
    images = torch.randn(2, 3, 16, 16)
    assert torch.allclose(loaded(images), model.eval()(images))


def test_a_backbone_loads_out_of_a_multi_head_checkpoint(tmp_path):
    """A head specialist started from the coarse model reads the coarse model's `backbone.` tensors."""
    coarse, spec = create_model(STAGE, HEADS)
    save_model(tmp_path, coarse, spec)
    specialist, _ = create_model(STAGE, OutputLayout.single(("young", "middle", "old")))
    load_weights_file(specialist, tmp_path / "weights.safetensors", "fine.age.init_from_coarse", new_head=True,
                      prefix="backbone.")
    for name, tensor in coarse.backbone.state_dict().items():
        assert torch.equal(specialist.state_dict()[name], tensor)
    with pytest.raises(RecipeError, match="no tensor in it fits"):
        load_weights_file(specialist, tmp_path / "weights.safetensors", "fine.age.init_from_coarse", prefix="nope.")


def test_a_broken_model_description_is_a_run_error(tmp_path):
    from hierclf.errors import RunError

    model, spec = create_model(STAGE, AB)
    save_model(tmp_path, model, spec)
    (tmp_path / "model.json").write_text('{"arch": "test_resnet"}')
    with pytest.raises(RunError, match="model.json: in_chans is missing; delete the fold's folder"):
        load_model(tmp_path, torch.device("cpu"))
    whole = json.loads(spec.to_json())
    (tmp_path / "model.json").write_text(json.dumps({**whole, "class_names": ["a"]}))
    with pytest.raises(RunError, match="model.json is not a model description"):
        load_model(tmp_path, torch.device("cpu"))


def _saved_imagenet_model(tmp_path, arch: str) -> str:
    """A timm model as a 1,000-class checkpoint: its classifier has timm's init for 1,000 classes,
    which a head for a few classes must not inherit."""
    import timm
    torch.manual_seed(0)
    source = timm.create_model(arch, num_classes=1000)
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return str(path)


def _first_loss(model, layout, size: int) -> float:
    """The stage's loss on a first batch of random images and labels, before any step."""
    import numpy as np
    from hierclf.recipe.schema import HeadConfig
    from hierclf.train.losses import build_layout_loss
    rng = np.random.default_rng(0)
    targets = np.stack([rng.integers(0, block.size, 32) for block in layout.blocks], axis=1)
    criterion = build_layout_loss(layout, [HeadConfig()] * len(layout.blocks), ["coarse"] * len(layout.blocks), targets)
    model.train()
    images = torch.from_numpy(rng.uniform(-1, 1, (32, 3, size, size)).astype("float32"))
    with torch.no_grad():
        return float(criterion(model(images), torch.from_numpy(targets)))


@pytest.mark.parametrize("arch, size", [("test_efficientnet", 32), ("tf_efficientnet_lite0", 64)])
@pytest.mark.parametrize("layout, separate", [(AB, False), (OutputLayout.single(tuple("abcdefghij")), False),
                                              (HEADS, False), (HEADS, True)], ids=["2", "10", "heads", "separate"])
def test_a_new_head_on_loaded_weights_starts_at_the_chance_loss(tmp_path, arch, size, layout, separate):
    """Whatever the layout, the first batch's loss is ln C (summed over heads): timm's own init
    for these heads, sized for 1,000 classes, starts EfficientNet's far above it."""
    import math
    config = StageConfig(model=arch, img_size=size, weights=_saved_imagenet_model(tmp_path, arch))
    model, _ = create_model(config, layout, separate=separate)
    chance = sum(math.log(block.size) for block in layout.blocks)
    assert _first_loss(model, layout, size) == pytest.approx(chance, rel=0.05)
    if not separate and len(layout.blocks) == 1:  # what the fix is for: timm's init, loaded the same way
        import timm
        torch.manual_seed(0)
        timms = timm.create_model(arch, num_classes=layout.width)
        load_weights_file(timms, config.weights, "coarse.weights")
        assert _first_loss(timms, layout, size) > 1.2 * chance


def test_a_specialist_from_the_coarse_model_gets_a_new_head_at_zero(tmp_path):
    """init_from_coarse: the coarse fold's backbone with a new head for the group, at the chance loss."""
    coarse, _ = create_model(StageConfig(model="test_efficientnet", img_size=32), OutputLayout.single(tuple("abcde")),
                             seed=1)
    torch.nn.init.normal_(coarse.get_classifier().weight, std=1.0)  # a trained head, nothing like zero
    path = tmp_path / "coarse.safetensors"
    save_file({k: v.contiguous() for k, v in coarse.state_dict().items()}, str(path))
    specialist, _ = create_model(StageConfig(model="test_efficientnet", img_size=32, init_from_coarse=True), AB,
                                 seed=2)
    load_weights_file(specialist, path, "fine.init_from_coarse", new_head=True)
    assert torch.count_nonzero(specialist.get_classifier().weight) == 0
    assert torch.equal(specialist.conv_stem.weight, coarse.conv_stem.weight)


def test_from_scratch_every_weight_is_timms_own():
    """Nothing is loaded: the head keeps timm's init, sized for these classes and random features."""
    for separate, layout in ((False, ABC), (False, HEADS), (True, HEADS)):
        model, _ = create_model(StageConfig(model="test_efficientnet", img_size=32), layout, separate=separate)
        assert all(torch.count_nonzero(module.weight) > 0 for module in classifier_modules(model))
