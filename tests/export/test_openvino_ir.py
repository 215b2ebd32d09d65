"""`hierclf export --format openvino`: the IR pair serves what predict gives, carries the
metadata, is written whole or not at all, and its int8 is checked as predict's is."""
import json

import numpy as np
import pytest

from conftest import cli, pixels_of
from hierclf.data import Items
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.run.folder import Run

openvino = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


def test_a_heads_run_exports_to_ir_that_serves_as_predict_with_its_metadata(mask_runs, tmp_path):
    """Coarse 32 px with three heads, the age specialist at 48 px, fed at 96 px (both by a whole factor)."""
    out = tmp_path / "pipeline.xml"
    result = cli("export", mask_runs / "heads", "--out", out, "--format", "openvino")
    assert result.exit_code == 0, result.output
    assert "checked with onnxruntime and OpenVINO" in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["pipeline.bin", "pipeline.xml"]
    images = pixels_of(mask_runs / "data" / "images", every=5).repeat(3, axis=1).repeat(3, axis=2)
    expected = predict_items(Run.open(mask_runs / "heads"), Items.from_arrays(images),
                             inference=Inference(workers=0, device="cpu"))
    core = openvino.Core()
    model = core.read_model(out)  # as a server loads it: the .bin found beside the .xml
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for rows in ([0], list(range(7)), list(range(7, len(images)))):
        outputs = compiled(images[rows])
        probs, labels = np.asarray(outputs["probs"]), np.asarray(outputs["labels"])
        assert np.abs(probs - expected.probs[rows]).max() <= 1e-4
        assert np.array_equal(labels, expected.labels[rows])
    classes = model.get_rt_info(["hierclf", "classes"]).astype(str)
    assert json.loads(classes) == list(expected.class_names)
    assert model.get_rt_info(["hierclf", "exact_input_size"]).astype(str) == "96"


def test_what_the_ir_export_refuses_it_says_in_one_line_and_writes_nothing(mask_runs, flat_run, tmp_path):
    result = cli("export", mask_runs / "heads", "--out", tmp_path / "pipeline.onnx", "--format", "openvino")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--out " in result.stderr and "OpenVINO IR is an .xml file" in result.stderr and "pipeline.xml" in result.stderr
    for name in ("small.xml", "small.bin"):  # an earlier export's pair, kept when this one fails
        (tmp_path / name).write_text("before")
    result = cli("export", flat_run[0], "--out", tmp_path / "small.xml", "--format", "openvino")  # 16 px: unconvertible
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "OpenVINO cannot convert" in result.stderr and "coarse 16 px) for --format openvino (AveragePool" \
        in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["small.bin", "small.xml"]
    assert {(tmp_path / name).read_text() for name in ("small.xml", "small.bin")} == {"before"}


def test_an_int8_ir_is_checked_against_the_float_graph_and_says_so(mask_runs, tmp_path, monkeypatch):
    pytest.importorskip("nncf")
    monkeypatch.setattr("hierclf.models.onnx_graph.INT8_TOLERANCE", 100.0)
    out = tmp_path / "int8.xml"
    result = cli("export", mask_runs / "heads", "--out", out, "--format", "openvino", "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert "quantized: int8 (OpenVINO's NNCF post-training quantisation" in result.output
    assert "FakeQuantize" in out.read_text() or "fake_quantize" in out.read_text().lower()
    monkeypatch.setattr("hierclf.models.onnx_graph.INT8_TOLERANCE", -1.0)
    result = cli("export", mask_runs / "heads", "--out", tmp_path / "refused.xml", "--format", "openvino",
                 "--quantize", "int8")
    assert result.exit_code == 2 and "--quantize int8: the int8 graph scores macro-F1" in result.stderr
    assert not (tmp_path / "refused.xml").exists() and not (tmp_path / "refused.bin").exists()
