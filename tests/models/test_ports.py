"""Weights of another port converted to timm's names: by name where the names hold, else by order,
every shape checked; nothing unpickled."""
import pytest
import timm
import torch

from conftest import cli, write_csv_dataset, write_recipe
from hierclf.errors import RecipeError
from hierclf.models.ports import convert, convert_checkpoint, read_checkpoint
from hierclf.run.files import load_weights

MODEL = "test_efficientnet"


def another_port(state: dict) -> dict:
    """The same tensors, in the same order, under another port's names (efficientnet_pytorch's
    style: _conv_stem, _blocks.N._depthwise_conv, _bn0, _fc, …), counters dropped."""
    renamed = {}
    for index, (name, tensor) in enumerate(state.items()):
        if name.endswith("num_batches_tracked"):
            continue
        renamed[f"_layers.{index:03d}._{name.rsplit('.', 1)[-1]}"] = tensor.clone()
    return renamed


def test_a_checkpoint_of_another_port_is_matched_by_order_and_loads_into_timm(tmp_path):
    torch.manual_seed(0)
    original = timm.create_model(MODEL, pretrained=False)
    torch.save(another_port(original.state_dict()), tmp_path / "port.pth")
    converted = convert_checkpoint(tmp_path / "port.pth", MODEL)
    assert converted.by == "by order"
    state = original.state_dict()
    assert all(torch.equal(converted.tensors[name], state[name]) for name in converted.tensors)
    assert set(state) - set(converted.tensors) == {n for n in state if n.endswith("num_batches_tracked")}
    result = cli("import-weights", tmp_path / "port.pth", "--model", MODEL, "--out", tmp_path / "w.safetensors")
    assert result.exit_code == 0, result.output
    assert "by order" in result.output
    rebuilt = timm.create_model(MODEL, pretrained=False)
    rebuilt.load_state_dict(load_weights(tmp_path / "w.safetensors"), strict=False)
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(images), original.eval()(images))


def test_wrapped_timm_names_are_matched_by_name(tmp_path):
    original = timm.create_model(MODEL, pretrained=False)
    wrapped = {f"module.{name}": tensor for name, tensor in original.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": wrapped}, tmp_path / "checkpoint.pth")
    converted = convert_checkpoint(tmp_path / "checkpoint.pth", MODEL)
    assert converted.by == "by name" and set(converted.tensors) == set(original.state_dict())


def test_a_tensor_that_does_not_fit_is_named_and_nothing_is_written(tmp_path):
    state = another_port(timm.create_model(MODEL, pretrained=False).state_dict())
    names = list(state)
    state[names[4]] = torch.zeros(7, 7)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(RecipeError, match=rf"tensor '{names[4]}' \(7, 7\) does not fit {MODEL}'s"):
        convert_checkpoint(tmp_path / "bad.pth", MODEL)
    del state[names[4]]
    with pytest.raises(RecipeError, match=rf"tensors \(BatchNorm counters aside\), but {MODEL} has"):
        convert(state, timm.create_model(MODEL).state_dict(), MODEL)
    torch.save(state, tmp_path / "short.pth")
    result = cli("import-weights", tmp_path / "short.pth", "--model", MODEL, "--out", tmp_path / "w.safetensors")
    assert result.exit_code == 2 and "it is not a port of" in result.stderr
    assert not (tmp_path / "w.safetensors").exists()


class Payload:
    """Not a tensor: unpickling it would run code of the file's choosing."""


def test_nothing_but_tensors_is_unpickled(tmp_path):
    torch.save({"weights": Payload()}, tmp_path / "pickled.pth")
    with pytest.raises(RecipeError, match="cannot read it as weights"):
        read_checkpoint(tmp_path / "pickled.pth")
    result = cli("import-weights", tmp_path / "nope.pth", "--model", MODEL, "--out", tmp_path / "w.safetensors")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = cli("import-weights", tmp_path / "pickled.pth", "--model", "test_efficientnt", "--out", tmp_path / "w")
    assert result.exit_code == 2 and "did you mean" in result.stderr


def test_converted_weights_start_a_stage(tmp_path):
    original = timm.create_model("test_resnet", pretrained=False, num_classes=1000)
    torch.save(another_port(original.state_dict()), tmp_path / "port.pth")
    assert cli("import-weights", tmp_path / "port.pth", "--model", "test_resnet", "--out",
               tmp_path / "w.safetensors").exit_code == 0
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(write_csv_dataset(tmp_path / "data"))},
                          coarse={"in_chans": 3, "weights": str(tmp_path / "w.safetensors"), "epochs": 2})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 0)
    assert result.exit_code == 0, result.output
    # every tensor of the original, under timm's names, is what the stage started from; only the
    # 1,000-class head is left out
    converted = load_weights(tmp_path / "w.safetensors")
    kept = {name: value for name, value in original.state_dict().items() if not name.endswith("num_batches_tracked")}
    assert converted.keys() == kept.keys() and all(torch.equal(converted[name], kept[name]) for name in kept)
    assert (f"loaded {len(kept) - 2} tensors from {tmp_path / 'w.safetensors'}; left out 2 that do not fit: fc.bias, "
            f"fc.weight") in result.output


def test_rgb_weights_start_a_greyscale_model_with_its_stem_summed(tmp_path):
    from hierclf.hierarchy.layout import OutputLayout
    from hierclf.models.factory import create_model
    from hierclf.recipe.schema import StageConfig
    from hierclf.run.files import save_weights

    rgb = timm.create_model("test_resnet", pretrained=False, num_classes=3).state_dict()
    save_weights(tmp_path / "rgb.safetensors", rgb)
    grey, _ = create_model(StageConfig(model="test_resnet", in_chans=1, weights=str(tmp_path / "rgb.safetensors")),
                           OutputLayout.single(("a", "b", "c")))
    state = grey.state_dict()
    assert torch.allclose(state["conv1.0.weight"], rgb["conv1.0.weight"].sum(1, keepdim=True))
    assert torch.equal(state["fc.weight"], rgb["fc.weight"])  # everything else as the file has it


@pytest.mark.parametrize("port", [False, True], ids=["timm-names", "another-port"])
def test_a_checkpoint_for_another_number_of_classes_loads_its_backbone(tmp_path, port):
    """The same architecture trained for 7 classes: the classifier is left out and said, every
    other tensor converted (it was refused as 'not a port of')."""
    torch.manual_seed(0)
    seven = timm.create_model(MODEL, pretrained=False, num_classes=7)
    state = another_port(seven.state_dict()) if port else seven.state_dict()
    torch.save(state, tmp_path / "seven.pth")
    result = cli("import-weights", tmp_path / "seven.pth", "--model", MODEL, "--out", tmp_path / "w.safetensors")
    assert result.exit_code == 0, result.output
    assert f"left out {MODEL}'s classifier (classifier.weight, classifier.bias)" in result.output
    saved = load_weights(tmp_path / "w.safetensors")
    assert not any(name.startswith("classifier.") for name in saved)
    assert torch.equal(saved["conv_stem.weight"], seven.state_dict()["conv_stem.weight"])


def test_a_file_larger_than_any_checkpoint_of_the_model_is_refused_unread(tmp_path, monkeypatch):
    """A 5 GB sparse file was read whole, to end in a MemoryError traceback."""
    big = tmp_path / "big.pth"
    with big.open("wb") as handle:
        handle.truncate(5 * 2**30)  # sparse: no disk is used
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the file was read"))
    result = cli("import-weights", big, "--model", MODEL, "--out", tmp_path / "w.safetensors")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"it holds 5,120 MB, more than a checkpoint of {MODEL} can" in result.stderr
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(write_csv_dataset(tmp_path / "data"))},
                          coarse={"model": MODEL, "weights": str(big)})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "it holds 5,120 MB, more than a checkpoint of" in result.stderr, result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "w.safetensors").exists()
