"""predict's OpenVINO engine: in f32 the torch engine's predictions to float rounding, in bf16
within bf16's rounding, on every layout and combiner, several runs and shards; its int8 checked
as onnxruntime's is; nothing written into the run folder."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import assert_agrees_with_torch, assert_int8_checked_both_ways, cli
from hierclf.data import load_input_items
from hierclf.errors import HierclfError
from hierclf.predict.pipeline import Inference, predict_items, predict_runs
from hierclf.run.folder import Run

openvino = pytest.importorskip("openvino")
HAS_BF16 = "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")

TORCH = Inference(workers=0, device="cpu")
F32_TOLERANCE, BF16_TOLERANCE = 1e-4, 0.03
"""The largest probability difference to torch's: f32 is float rounding; bf16 keeps 8 bits of
mantissa (a relative 0.4 % a value), over a network's every layer."""
PRECISIONS = ["f32", pytest.param("bf16", marks=pytest.mark.skipif(not HAS_BF16, reason="no bf16 units"))]


@pytest.fixture(scope="module")
def runs(detail_runs, tmp_path_factory):
    """detail_runs' recipes with the coarse stage at 32 px (OpenVINO refuses the test ResNet's last
    stage at 12 or 16 px, where its pooling window outgrows the input): flat, grouped with its
    specialist, and `linked`'s blend over the flat run; a few epochs (agreement, not accuracy)."""
    root = tmp_path_factory.mktemp("openvino")
    size = ("--set", "coarse.img_size=32", "--set", "coarse.epochs=3")
    for args in (("fit-coarse", detail_runs / "flat.toml", "--out", root / "flat", *size),
                 ("fit-coarse", detail_runs / "hier.toml", "--out", root / "hier", *size),
                 ("fit-fine", root / "hier", "--set", "fine.epochs=2"),
                 ("fit-coarse", detail_runs / "linked.toml", "--out", root / "linked", *size,
                  "--set", f"hierarchy.coarse_run={root / 'flat'}"),
                 ("fit-fine", root / "linked", "--set", "fine.epochs=2")):
        result = cli("-q", *args)
        assert result.exit_code == 0, result.output
    return root, detail_runs / "data" / "train.csv"


def _engine(precision: str, **views) -> Inference:
    return Inference(workers=0, device="cpu", engine="openvino", threads=1, precision=precision, **views)


def _close(torch_out, openvino_out, precision, combiner=None):
    """Probabilities within the precision's tolerance; every label the same but where torch's two
    best classes lie within the tolerance of each other (in f32: none)."""
    tolerance = F32_TOLERANCE if precision == "f32" else BF16_TOLERANCE
    assert np.abs(torch_out.probs - openvino_out.probs).max() < tolerance, combiner
    differ = torch_out.labels != openvino_out.labels
    if precision == "f32":
        assert not differ.any()
    top_two = np.sort(torch_out.probs, axis=1)[:, -2:]
    assert (top_two[differ, 1] - top_two[differ, 0] < 2 * tolerance).all()


def _agree(run_dir, precision, input_path=None, combiners=(None,), trace=False):
    assert_agrees_with_torch(run_dir, _engine(precision), lambda torch_out, openvino_out, combiner: _close(
        torch_out, openvino_out, precision, combiner), input_path, combiners, trace)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_flat_run(runs, precision):
    _agree(runs[0] / "flat", precision, runs[1])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_grouped_run_with_every_combiner_and_its_trace(runs, precision):
    _agree(runs[0] / "hier", precision, runs[1], ("product", "routed", "stacking"), trace=True)


def test_a_blend_over_a_flat_run(runs):
    _agree(runs[0] / "linked", "f32", runs[1], ("blend",))


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_heads_run_with_its_specialist(mask_runs, precision):
    _agree(mask_runs / "heads", precision)


def test_a_calibrated_run_with_test_time_views_and_several_runs(runs, tmp_path):
    shutil.copytree(runs[0] / "hier", tmp_path / "run")
    assert cli("-q", "fit-fine", tmp_path / "run", "--set", "combine.calibrate=true").exit_code == 0
    run = Run.open(tmp_path / "run")
    items = load_input_items(runs[1], run.hierarchy.class_names)
    views = dict(tta=("hflip", "scale=1.2"))
    _close(predict_items(run, items, inference=Inference(workers=0, device="cpu", **views)),
           predict_items(run, items, inference=_engine("f32", **views)), "f32")
    both = [run, Run.open(runs[0] / "hier")]
    _close(predict_runs(both, items, inference=TORCH), predict_runs(both, items, inference=_engine("f32")), "f32")


def test_the_command_says_which_engine_ran_and_shards_with_it(runs, tmp_path):
    run, train_csv = runs[0] / "flat", runs[1]
    result = cli("predict", run, train_csv, "--out", tmp_path / "t.csv", "--workers", "0", "--probs")
    assert result.exit_code == 0, result.output
    for shard in (0, 1):
        result = cli("predict", run, train_csv, "--out", tmp_path / "s.csv", "--engine", "openvino", "--threads", "1",
                     "--workers", "0", "--probs", "--shard", f"{shard}/2")
        assert result.exit_code == 0, result.output
    assert "engine: openvino on the CPU, 1 threads" in result.output
    openvino_rows = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1, usecols=(2, 3, 4, 5))
    torch_rows = np.loadtxt(tmp_path / "t.csv", delimiter=",", skiprows=1, usecols=(2, 3, 4, 5))
    assert np.abs(openvino_rows - torch_rows).max() < F32_TOLERANCE
    if HAS_BF16:
        result = cli("predict", run, train_csv, "--out", tmp_path / "b.csv", "--engine", "openvino", "--precision",
                     "bf16", "--workers", "0")
        assert result.exit_code == 0 and "engine: openvino bf16 on the CPU" in result.output, result.output


def test_bf16_and_the_engine_are_refused_where_they_cannot_run(runs, flat_run, tmp_path, monkeypatch):
    with pytest.raises(HierclfError, match="precision bf16: expected f32, or bf16 with engine openvino"):
        Inference(engine="onnxruntime", precision="bf16")
    with pytest.raises(HierclfError, match="engine openvino runs on the CPU; with device cuda"):
        Inference(engine="openvino", device="cuda")
    run, train_csv = flat_run[0], flat_run[2]  # test_resnet at 16 px: its last stage pools a 1×1 input
    result = cli("predict", run, train_csv, "--out", tmp_path / "o.csv", "--engine", "openvino", "--workers", "0")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "OpenVINO cannot convert the test_resnet fold vote at 16 px for --engine openvino (AveragePool" \
        in result.stderr and "use onnxruntime or torch" in result.stderr
    monkeypatch.setattr(openvino.Core, "get_property", lambda self, device, name: ["FP32", "INT8"])
    run, train_csv = runs[0] / "flat", runs[1]
    result = cli("predict", run, train_csv, "--out", tmp_path / "o.csv", "--engine", "openvino", "--precision", "bf16",
                 "--workers", "0")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--precision bf16: this CPU has no bf16 units (OpenVINO reports FP32, INT8); use --precision f32" \
        in result.stderr
    assert not (tmp_path / "o.csv").exists()
    result = cli("predict", run, train_csv, "--out", tmp_path / "o.csv", "--engine", "openvino", "--tta",
                 "hflip,scale=0.8", "--workers", "0")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--engine openvino: OpenVINO's antialiased resize, which the zoom-out view scale=0.8 needs" in result.stderr


def test_without_openvino_one_line_names_what_to_install(runs, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    run, train_csv = runs[0] / "flat", runs[1]
    result = cli("predict", run, train_csv, "--out", tmp_path / "o.csv", "--engine", "openvino", "--workers", "0")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "needs openvino, which is not installed: pip install 'hierclf[openvino]'" in result.stderr


def test_int8_is_calibrated_by_nncf_checked_and_close_to_the_float_graph(runs, tmp_path, monkeypatch):
    """As onnxruntime's: the check is exercised both ways by moving its tolerance."""
    pytest.importorskip("nncf")
    # a 3-epoch model at 32 px leaves many of its 160 rows near a tie, which int8's rounding tips
    # (onnxruntime's int8 on the 10-epoch flat run keeps 90 %); a broken quantisation keeps a quarter
    assert_int8_checked_both_ways(runs[0] / "flat", runs[1], "openvino", tmp_path, monkeypatch, agreement=0.7)


TELEMETRY = ("import os; from hierclf.predict.openvino_engine import nncf_without_telemetry; "
             "nncf_without_telemetry('x'); import nncf.telemetry.wrapper as wrapper; "
             "print(type(wrapper.telemetry).__name__, 'CI' in os.environ, 'NNCF_CI' in os.environ)")


@pytest.mark.parametrize("consent, sending", [(None, False), ("0", False), ("1", True)])
def test_nncf_sends_no_usage_statistics_unless_the_user_opted_in(tmp_path, consent, sending):
    home = tmp_path / "home"
    (home / "intel").mkdir(parents=True)
    if consent is not None:  # what openvino's `opt_in_out --opt_in` / `--opt_out` writes
        (home / "intel" / "openvino_telemetry").write_text(consent)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI", "NNCF_DEV")}
    done = subprocess.run([sys.executable, "-c", TELEMETRY], env={**env, "HOME": str(home)}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    kind, ci, nncf_ci = done.stdout.split()
    assert kind == ("NNCFTelemetry" if sending else "MagicMock")  # NNCF's stub (NNCFTelemetryStub) is a MagicMock
    assert (home / "intel" / "openvino_ga_cid").exists() == sending  # no client id written for an unasked user
    assert ci == nncf_ci == "False"  # the switches were only set while nncf was imported
