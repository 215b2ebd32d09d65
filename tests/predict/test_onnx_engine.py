"""predict's onnxruntime engine: the same predictions as the torch engine, to float rounding, on
every layout and combiner, with nothing written into the run folder."""
import shutil

import numpy as np
import pytest

from conftest import assert_agrees_with_torch, assert_int8_checked_both_ways, cli
from hierclf.data import load_input_items
from hierclf.errors import HierclfError
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.run.folder import Run

pytest.importorskip("onnxruntime")

TORCH, ONNX = Inference(workers=0, device="cpu"), Inference(workers=0, device="cpu", engine="onnxruntime", threads=1)


def _same(torch_out, onnx_out, combiner):
    assert np.abs(torch_out.probs - onnx_out.probs).max() < 1e-4, combiner
    assert np.array_equal(torch_out.labels, onnx_out.labels), combiner


def _agree(run_dir, input_path=None, combiners=(None,), trace=False):
    """Both engines on `input_path` (default: the run's own training rows)."""
    assert_agrees_with_torch(run_dir, ONNX, _same, input_path, combiners, trace)


def test_a_flat_run(flat_run):
    run, _, train_csv, _ = flat_run
    _agree(run, train_csv)


def test_a_grouped_run_with_every_combiner_and_its_trace(detail_runs):
    _agree(detail_runs / "hier", detail_runs / "data" / "train.csv", ("product", "routed", "stacking"), trace=True)


def test_a_blend_over_a_flat_run(detail_runs):
    _agree(detail_runs / "linked", detail_runs / "data" / "train.csv", ("blend",))


def test_a_heads_run_with_its_specialist(mask_runs):
    _agree(mask_runs / "heads")


def test_a_calibrated_run_with_test_time_views(detail_runs, tmp_path):
    shutil.copytree(detail_runs / "hier", tmp_path / "run")
    assert cli("-q", "fit-fine", tmp_path / "run", "--set", "combine.calibrate=true").exit_code == 0
    run = Run.open(tmp_path / "run")
    items = load_input_items(detail_runs / "data" / "train.csv", run.hierarchy.class_names)
    views = dict(tta=("hflip", "scale=0.8"))
    torch_out = predict_items(run, items, inference=Inference(workers=0, device="cpu", **views))
    onnx_out = predict_items(run, items, inference=Inference(workers=0, device="cpu", engine="onnxruntime", **views))
    assert np.abs(torch_out.probs - onnx_out.probs).max() < 1e-4
    assert np.array_equal(torch_out.labels, onnx_out.labels)


def test_the_command_says_which_engine_ran_and_shards_with_it(flat_run, tmp_path):
    run, _, train_csv, _ = flat_run
    result = cli("predict", run, train_csv, "--out", tmp_path / "o.csv", "--engine", "onnxruntime", "--threads", "1",
                 "--workers", "0", "--probs")
    assert result.exit_code == 0, result.output
    assert "engine: onnxruntime on the CPU, 1 threads" in result.output
    result = cli("predict", run, train_csv, "--out", tmp_path / "t.csv", "--workers", "0", "--probs")
    assert "engine: torch on cpu" in result.output
    for shard in (0, 1):
        assert cli("predict", run, train_csv, "--out", tmp_path / "s.csv", "--engine", "onnxruntime", "--workers", "0",
                   "--probs", "--shard", f"{shard}/2").exit_code == 0
    onnx_rows = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1, usecols=(2, 3, 4))
    torch_rows = np.loadtxt(tmp_path / "t.csv", delimiter=",", skiprows=1, usecols=(2, 3, 4))
    assert np.abs(onnx_rows - torch_rows).max() < 1e-4


def test_the_engine_is_refused_off_the_cpu_and_by_name():
    with pytest.raises(HierclfError, match="engine onnxruntime runs on the CPU; with device cuda"):
        Inference(engine="onnxruntime", device="cuda")
    with pytest.raises(HierclfError, match="engine 'tensorrt': expected one of torch, onnxruntime"):
        Inference(engine="tensorrt")


def test_int8_is_calibrated_checked_and_close_to_the_float_graph(flat_run, tmp_path, monkeypatch):
    """The check itself is exercised both ways by moving its tolerance: a tiny model's int8 loss
    depends on the CPU's int8 kernels, so the test does not bet on where it falls."""
    import hierclf.predict.pipeline as pipeline

    run, _, train_csv, _ = flat_run
    assert_int8_checked_both_ways(run, train_csv, "onnxruntime", tmp_path, monkeypatch, agreement=0.9)
    assert pipeline.int8_rows(Run.open(run))[0].ids.size == 30
    with pytest.raises(HierclfError, match="quantize int8: expected int8, with engine onnxruntime"):
        Inference(quantize="int8")


@pytest.mark.parametrize("threads", ["1000000000", "2147483648", "1025"])
def test_a_thread_count_beyond_any_machine_is_refused_in_one_line(flat_run, tmp_path, threads):
    run, _, train_csv, _ = flat_run
    result = cli("predict", run, train_csv, "--out", tmp_path / "o.csv", "--engine", "onnxruntime", "--threads",
                 threads)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"--threads {threads}: expected 0 (one per core) to 1024" in result.stderr
    assert not (tmp_path / "o.csv").exists()
    assert Inference(engine="onnxruntime", threads=1024).threads == 1024


def test_int8_on_a_run_whose_training_images_moved_says_why_it_needs_them(flat_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(flat_run[0], run)
    train_csv = flat_run[2]
    moved = tmp_path / "data"
    shutil.copytree(train_csv.parent, moved)
    recipe = (run / "recipe.toml").read_text()
    (run / "recipe.toml").write_text(recipe.replace(str(train_csv.parent), str(tmp_path / "gone")))
    result = cli("predict", run, moved / "train.csv", "--out", tmp_path / "p.csv", "--engine", "onnxruntime",
                 "--quantize", "int8", "--workers", "0")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--quantize int8 calibrates and checks the int8 graph on" in result.stderr
    assert "own training images" in result.stderr and "or predict without --quantize" in result.stderr
    assert not (tmp_path / "p.csv").exists()
