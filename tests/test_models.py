import pytest
import torch
from safetensors.torch import save_file

from hierclf.errors import RecipeError
from hierclf.models import create_model, load_model, load_weights_file, save_model
from hierclf.recipe import StageConfig

STAGE = StageConfig(model="test_resnet", img_size=16, in_chans=3)


class Sneaky:
    """An arbitrary object: loading it would need a full unpickle."""


def test_create_model_and_spec():
    model, spec = create_model(STAGE, ("a", "b", "c"))
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 3)
    assert spec.num_classes == 3 and spec.class_names == ("a", "b", "c") and len(spec.mean) == 3
    grey, grey_spec = create_model(StageConfig(model="test_resnet", in_chans=1), ("a", "b"))
    assert grey(torch.zeros(2, 1, 16, 16)).shape == (2, 2) and len(grey_spec.mean) == 1
    vit, _ = create_model(StageConfig(model="test_vit", img_size=32), ("a", "b"))
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 2)  # fixed-size models are told the size


def test_unknown_architecture_suggests_names():
    with pytest.raises(RecipeError, match="coarse.model = 'test_resnt': timm has no such model.*test_resnet"):
        create_model(StageConfig(model="test_resnt"), ("a", "b"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_offline(tmp_path, suffix):
    source, _ = create_model(STAGE, tuple("abcde"))  # another head size: must be left out
    state = source.state_dict()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model, _ = create_model(StageConfig(model="test_resnet", img_size=16, weights=str(path)), ("a", "b", "c"))
    loaded = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert backbone and all(torch.equal(loaded[k], state[k]) for k in backbone)
    assert loaded["fc.weight"].shape == (3, source.fc.in_features)


def test_weights_that_fit_nothing_or_need_pickle_are_refused(tmp_path):
    save_file({"unrelated": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(RecipeError, match="no tensor in it fits"):
        create_model(StageConfig(model="test_resnet", weights=str(tmp_path / "other.safetensors")), ("a", "b"))
    torch.save({"state_dict": {}, "payload": Sneaky()}, tmp_path / "pickled.pth")
    with pytest.raises(RecipeError, match="cannot read weights"):
        create_model(StageConfig(model="test_resnet", weights=str(tmp_path / "pickled.pth")), ("a", "b"))
    with pytest.raises(RecipeError, match="no such file"):
        create_model(StageConfig(model="test_resnet", weights=str(tmp_path / "missing.pth")), ("a", "b"))


def test_save_and_load_round_trip(tmp_path):
    model, spec = create_model(STAGE, ("a", "b"))
    save_model(tmp_path, model, spec)
    loaded, loaded_spec = load_model(tmp_path, torch.device("cpu"))
    assert loaded_spec == spec
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    assert torch.allclose(model(x), loaded(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "weights.safetensors"]


HEADS = (("mask", 3), ("gender", 2), ("age", 3))


@pytest.mark.parametrize("separate", [False, True])
def test_attribute_heads_side_by_side_and_back_from_disk(tmp_path, separate):
    model, spec = create_model(STAGE, ("m0", "m1", "m2", "g0", "g1", "a0", "a1", "a2"), heads=HEADS, separate=separate)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 8)
    assert spec.heads == HEADS and spec.head_sizes == (3, 2, 3) and spec.separate == separate
    names = model.state_dict().keys()
    if separate:  # one whole model per attribute
        assert {name.split(".")[1] for name in names} == {"mask", "gender", "age"}
        assert any(name.startswith("models.age.fc.") for name in names)
    else:  # one backbone, three linear heads
        assert {name.split(".")[0] for name in names} == {"backbone", "heads"}
        assert model.heads["gender"].out_features == 2
    save_model(tmp_path, model, spec)
    loaded, loaded_spec = load_model(tmp_path, torch.device("cpu"))
    assert loaded_spec == spec
    images = torch.randn(2, 3, 16, 16)
    assert torch.allclose(loaded(images), model.eval()(images))


def test_a_backbone_loads_out_of_a_multi_head_checkpoint(tmp_path):
    """A head specialist started from the coarse model reads the coarse model's `backbone.` tensors."""
    coarse, spec = create_model(STAGE, tuple("abcdefgh"), heads=HEADS)
    save_model(tmp_path, coarse, spec)
    specialist, _ = create_model(STAGE, ("young", "middle", "old"))
    load_weights_file(specialist, tmp_path / "weights.safetensors", "fine.age.init_from_coarse", new_head=True,
                      prefix="backbone.")
    for name, tensor in coarse.backbone.state_dict().items():
        assert torch.equal(specialist.state_dict()[name], tensor)
    with pytest.raises(RecipeError, match="no tensor in it fits"):
        load_weights_file(specialist, tmp_path / "weights.safetensors", "fine.age.init_from_coarse", prefix="nope.")
