"""The engine seam: one Vote per engine, chosen once by name; the torch vote is soft_vote's."""
import numpy as np
import torch

from hierclf.data.tta import parse_view
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.inference import soft_vote
from hierclf.models.spec import ModelSpec
from hierclf.predict.onnx_engine import OnnxVote
from hierclf.predict.engine_names import ENGINES, EngineChoice
from hierclf.predict.votes import TorchVote, make_vote


class _Tiny(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.conv, self.head = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 3)

    def forward(self, images):
        return self.head(self.conv(images).mean((2, 3)))


def _loader():
    images = torch.randn(10, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return [(images[:6], None, torch.arange(6)), (images[6:], None, torch.arange(6, 10))]


def test_each_engine_is_one_vote_chosen_by_name_and_torch_is_soft_vote():
    models, layout = [_Tiny(0), _Tiny(1)], OutputLayout.single(["a", "b", "c"])
    spec = ModelSpec(arch="tiny", layout=layout, in_chans=3, img_size=8, mean=(0.0,) * 3, std=(1.0,) * 3,
                     drop_rate=0.0)
    views = [parse_view("hflip", "test")]
    torch_vote = make_vote(EngineChoice("torch"), models, spec, views, torch.device("cpu"))
    assert isinstance(torch_vote, TorchVote) and torch_vote.in_float() is torch_vote
    probs, rows = torch_vote(_loader())
    expected, expected_rows = soft_vote(models, _loader(), torch.device("cpu"), layout, tta=views)
    assert np.array_equal(probs, expected) and np.array_equal(rows, expected_rows)
    onnx_vote = make_vote(EngineChoice("onnxruntime"), models, spec, views, torch.device("cpu"))
    assert isinstance(onnx_vote, OnnxVote) and onnx_vote.device.type == "cpu"
    onnx_probs, onnx_rows = onnx_vote(_loader())
    assert np.allclose(onnx_probs, probs, atol=1e-5) and np.array_equal(onnx_rows, rows)
    assert ENGINES == ("torch", "onnxruntime", "openvino")


def test_openvino_is_the_same_seam_in_f32_and_bf16():
    import pytest
    openvino = pytest.importorskip("openvino")
    from hierclf.predict.openvino_engine import OpenVinoVote

    precisions = [("f32", 1e-5)] + [("bf16", 2e-2)] * ("BF16" in openvino.Core().get_property(
        "CPU", "OPTIMIZATION_CAPABILITIES"))
    models, layout = [_Tiny(0), _Tiny(1)], OutputLayout.single(["a", "b", "c"])
    spec = ModelSpec(arch="tiny", layout=layout, in_chans=3, img_size=8, mean=(0.0,) * 3, std=(1.0,) * 3,
                     drop_rate=0.0)
    expected, rows = soft_vote(models, _loader(), torch.device("cpu"), layout)
    for precision, tolerance in precisions:
        vote = make_vote(EngineChoice("openvino", threads=1, precision=precision), models, spec, (), torch.device("cpu"))
        assert isinstance(vote, OpenVinoVote) and vote.in_float().compiled is vote.compiled
        probs, vote_rows = vote(_loader())
        assert np.abs(probs - expected).max() < tolerance and np.array_equal(vote_rows, rows)
