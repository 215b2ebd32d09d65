"""`hierclf export`: a run's whole prediction as one ONNX graph, which onnxruntime runs to the
probabilities and labels `predict_items` gives, for every kind of run and combiner."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from PIL import Image

from conftest import cli, pixels_of
from hierclf.data import Items
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.run.folder import Run


def exported(run: Path, tmp_path: Path, *options: str) -> tuple[Path, str]:
    out = tmp_path / "pipeline.onnx"
    result = cli("export", run, "--out", out, *options)
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(onnx.load(out), full_check=True)
    return out, result.output


def assert_serves_as_predict(path: Path, run: Path, images: np.ndarray, combiner: str | None = None,
                             tta: tuple[str, ...] | None = None) -> dict[str, str]:
    """onnxruntime's probabilities within 1e-4 of predict_items' and the same labels, in batches of 1
    and of 7; returns the file's metadata."""
    expected = predict_items(Run.open(run), Items.from_arrays(images), combiner,
                             inference=Inference(workers=0, device="cpu", tta=tta))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    fed = images if images.ndim == 4 else images[..., None]
    for rows in ([0], [len(images) - 1], list(range(7)), list(range(7, 14))):
        probs, labels = session.run(None, {"images": fed[rows]})
        assert probs.shape == (len(rows), len(expected.class_names)) and labels.dtype == np.int64
        assert np.abs(probs - expected.probs[rows]).max() <= 1e-4, np.abs(probs - expected.probs[rows]).max()
        assert np.array_equal(labels, expected.labels[rows])
    metadata = {prop.key: prop.value for prop in onnx.load(path).metadata_props}
    assert json.loads(metadata["classes"]) == list(expected.class_names)
    return metadata


def test_a_flat_run_exports_to_what_predict_gives_with_its_classes_and_input_in_the_metadata(flat_run, tmp_path):
    run, _, train_csv, _ = flat_run
    path, output = exported(run, tmp_path)
    assert "coarse (3 folds, 16 px), combined by flat" in output
    metadata = assert_serves_as_predict(path, run, pixels_of(train_csv.parent / "train", every=4))
    assert metadata["combiner"] == "flat" and "uint8, N×H×W×1 (grey" in metadata["input"]
    stage = json.loads(metadata["stages"])[0]
    assert stage["img_size"] == 16 and stage["folds"] == 3 and len(stage["mean"]) == 1
    assert metadata["exact_input_size"] == "16"


def test_the_serving_example_in_the_docs_labels_images_as_predict_does(flat_run, tmp_path):
    run, _, train_csv, _ = flat_run
    exported(run, tmp_path)
    page = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    (tmp_path / "serve.py").write_text(page.split("```python\n")[1].split("```")[0])
    files = sorted((train_csv.parent / "train").glob("*.png"))[::9]
    served = subprocess.run([sys.executable, "serve.py", *map(str, files)], cwd=tmp_path, capture_output=True,
                            text=True, check=True).stdout.splitlines()
    expected = predict_items(Run.open(run), Items.from_arrays(np.stack([np.asarray(Image.open(f)) for f in files])),
                             inference=Inference(workers=0, device="cpu"))
    assert [line.split()[1] for line in served] == [expected.class_names[label] for label in expected.labels]


def test_test_time_views_and_a_subset_of_folds_go_into_the_graph(flat_run, tmp_path):
    """A zoom out resizes with antialiasing, which the TorchScript exporter lacks: this graph is
    traced by torch.export (what --dynamo asks for), and serves as predict all the same."""
    run, _, train_csv, _ = flat_run
    path, output = exported(run, tmp_path, "--tta", "hflip,scale=0.8", "--folds", "2")
    assert "coarse (1 fold, 16 px)" in output
    images = pixels_of(train_csv.parent / "train", every=4)
    expected = predict_items(Run.open(run), Items.from_arrays(images), folds=[2],
                             inference=Inference(workers=0, device="cpu", tta=("hflip", "scale=0.8")))
    probs, _ = onnxruntime.InferenceSession(str(path)).run(None, {"images": images[..., None]})
    assert np.abs(probs - expected.probs).max() <= 1e-4
    plain = predict_items(Run.open(run), Items.from_arrays(images), inference=Inference(workers=0, device="cpu"))
    assert np.abs(probs - plain.probs).max() > 1e-3  # the views and folds changed the answer


@pytest.mark.parametrize("combiner", ["product", "routed"])
def test_a_grouped_run_exports_with_its_specialist_at_another_size(detail_runs, tmp_path, combiner):
    """Coarse 12 px, specialist 48 px, from 48 px images (a whole-factor downscale: the resize is exact)."""
    path, output = exported(detail_runs / "hier", tmp_path, "--combiner", combiner)
    assert "coarse (3 folds, 12 px), fine/patch (3 folds, 48 px)" in output
    metadata = assert_serves_as_predict(path, detail_runs / "hier", pixels_of(detail_runs / "data" / "train", 7),
                                        combiner)
    assert ("note" in metadata) == (combiner == "routed") and ("every specialist runs" in output) == (combiner == "routed")
    assert metadata["exact_input_size"] == "48"


@pytest.mark.parametrize("combiner", ["blend", "stacking", "coarse"])
def test_a_run_over_a_flat_run_exports_its_fitted_combiners(detail_runs, tmp_path, combiner):
    path, _ = exported(detail_runs / "linked", tmp_path, "--combiner", combiner)
    metadata = assert_serves_as_predict(path, detail_runs / "linked", pixels_of(detail_runs / "data" / "train", 7),
                                        combiner)
    # the coarse stage alone: the specialists are left out of the graph
    assert len(json.loads(metadata["stages"])) == (1 if combiner == "coarse" else 2)


def test_a_heads_run_exports_with_its_head_specialist(mask_runs, tmp_path):
    """Coarse 32 px with three heads, the age specialist at 48 px; the 32 px RGB images are fed at
    96 px (3× each pixel), which both stages reach by a whole factor."""
    path, output = exported(mask_runs / "heads", tmp_path)
    assert "fine/age (3 folds, 48 px)" in output
    images = pixels_of(mask_runs / "data" / "images", every=5).repeat(3, axis=1).repeat(3, axis=2)
    metadata = assert_serves_as_predict(path, mask_runs / "heads", images)
    assert "N×H×W×3 (RGB" in metadata["input"] and len(json.loads(metadata["classes"])) == 18
    assert metadata["exact_input_size"] == "96"


def test_a_calibrated_run_exports_its_temperatures(detail_runs, tmp_path):
    shutil.copytree(detail_runs / "hier", tmp_path / "run")
    result = cli("-q", "fit-fine", tmp_path / "run", "--set", "combine.calibrate=true")
    assert result.exit_code == 0, result.output
    path, _ = exported(tmp_path / "run", tmp_path)
    metadata = assert_serves_as_predict(path, tmp_path / "run", pixels_of(detail_runs / "data" / "train", 7))
    temperatures = [stage["temperatures"] for stage in json.loads(metadata["stages"])]
    assert all(len(t) == 1 for t in temperatures) and any(abs(t[0] - 1) > 0.01 for t in temperatures)


def test_images_of_another_size_are_resized_inside_the_graph_close_to_how_hierclf_resizes(flat_run, tmp_path):
    """37 px is no whole factor of 16 px: OpenCV's fixed-point resize and the graph's differ by a
    level on some pixels, so the answers are close, not equal."""
    run, _, train_csv, _ = flat_run
    path, _ = exported(run, tmp_path)
    small = pixels_of(train_csv.parent / "train", every=2)
    images = np.stack([np.asarray(Image.fromarray(image).resize((37, 37), Image.BILINEAR)) for image in small])
    expected = predict_items(Run.open(run), Items.from_arrays(images), inference=Inference(workers=0, device="cpu"))
    probs, labels = onnxruntime.InferenceSession(str(path)).run(None, {"images": images[..., None]})
    assert np.abs(probs - expected.probs).max() < 0.05 and (labels == expected.labels).mean() >= 0.9


def test_a_file_that_onnxruntime_does_not_run_as_the_model_is_never_written(flat_run, tmp_path, monkeypatch):
    import hierclf.export.onnx_file as onnx_file

    monkeypatch.setattr(onnx_file, "TOLERANCE", -1.0)  # every difference, even none, is too large
    result = cli("export", flat_run[0], "--out", tmp_path / "pipeline.onnx")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "differ from the run's" in result.stderr and "nothing was written" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_models_too_large_for_one_onnx_file_are_refused_before_tracing(flat_run, tmp_path, monkeypatch):
    import hierclf.export.onnx_file as onnx_file

    monkeypatch.setattr(onnx_file, "ONE_FILE", 1000)  # as if the three fold models held over 2 GB
    result = cli("export", flat_run[0], "--out", tmp_path / "pipeline.onnx")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "more than one ONNX file holds (2 GB); export fewer fold models (--folds)" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("options, message", [
    (["--out", "{run}/pipeline.onnx"], "--out .* inside the run folder"),
    (["--out", "{tmp}/p.onnx", "--folds", "one"], "--folds 'one': expected fold numbers"),
    (["--out", "{tmp}/p.onnx", "--folds", "7"], "--folds 7: this run has folds 0..2, no fold 7"),
    (["--out", "{tmp}/p.onnx", "--folds", "0,5"], "--folds 0,5: this run has folds 0..2, no fold 5"),
    (["--out", "{tmp}/p.onnx", "--folds", "0,0"], "--folds 0,0: fold 0 is named twice; name each fold once"),
    (["--out", "{tmp}/p.onnx", "--combiner", "product"], None),  # a flat run has one pipeline
    (["--out", "{tmp}/p.onnx", "--tta", "spin"], "--tta: unknown TTA variant 'spin'")])
def test_what_export_refuses_it_says_in_one_line(flat_run, tmp_path, options, message):
    run = flat_run[0]
    result = cli("export", run, *[option.format(run=run, tmp=tmp_path) for option in options])
    if message is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "p.onnx").exists() and not (run / "pipeline.onnx").exists()


def test_a_fold_not_trained_yet_is_refused_not_dropped(flat_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(flat_run[0], run)
    shutil.rmtree(run / "coarse" / "fold-2")
    result = cli("export", run, "--out", tmp_path / "p.onnx", "--folds", "0,2")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "--folds 0,2: fold 2 of coarse is not trained yet; run `hierclf fit-coarse` first" in result.stderr
    assert not (tmp_path / "p.onnx").exists()


def test_without_the_export_extra_it_says_what_to_install(flat_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    result = cli("export", flat_run[0], "--out", tmp_path / "p.onnx")
    assert result.exit_code == 2 and "needs onnxruntime, which is not installed" in result.stderr, result.output
    assert "pip install 'hierclf[export]'" in result.stderr and not (tmp_path / "p.onnx").exists()


def test_an_engine_installed_but_failing_to_import_is_named_with_its_error(flat_run, tmp_path, monkeypatch):
    """onnxruntime present but broken (a shared library that will not load): its own error, not
    "None is missing"; predict writes nothing."""
    from conftest import break_import

    break_import(monkeypatch, "onnxruntime", OSError("libonnxruntime.so.1: cannot open shared object file"))
    run, _, train_csv, _ = flat_run
    result = cli("predict", run, train_csv, "--out", tmp_path / "o.csv", "--engine", "onnxruntime")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert ("needs onnxruntime, which is installed but fails to import (OSError: libonnxruntime.so.1: cannot open "
            "shared object file)") in result.stderr and "None" not in result.stderr
    assert not (tmp_path / "o.csv").exists()


def test_a_specialist_of_another_architecture_from_its_own_weights_follows_through(detail_runs, tmp_path):
    """A specialist need not be the coarse stage's network: test_efficientnet started from a local
    weights file, at 48 px, under the 12 px test_resnet flat run; fit-fine, evaluate, predict and
    export follow it."""
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "effnet.safetensors"
    save_file(timm.create_model("test_efficientnet", num_classes=1000).state_dict(), weights)
    run = tmp_path / "run"
    for args in (("fit-coarse", detail_runs / "linked.toml", "--out", run, "--set", "fine.model=test_efficientnet",
                  "--set", f"fine.weights={weights}", "--set", "fine.init_from_coarse=false",
                  "--set", "fine.img_size=48", "--set", "fine.epochs=8"),
                 ("fit-fine", run), ("evaluate", run)):
        result = cli("-q", *args)
        assert result.exit_code == 0, result.output
    opened = Run.open(run)
    specialist = opened.stage_dir(opened.specialist_stages["patch"].name)
    assert json.loads((specialist / "fold-0" / "model.json").read_text())["arch"] == "test_efficientnet"
    assert json.loads((specialist / "summary.json").read_text())["oof_accuracy"] > 0.7  # it learnt its group
    path, output = exported(run, tmp_path, "--combiner", "blend")
    assert "fine/patch (3 folds, 48 px)" in output
    assert_serves_as_predict(path, run, pixels_of(detail_runs / "data" / "train", 7), "blend")


def test_an_int8_export_is_checked_against_the_float_graph_and_says_so(flat_run, tmp_path, monkeypatch):
    run = flat_run[0]
    monkeypatch.setattr("hierclf.models.onnx_graph.INT8_TOLERANCE", 100.0)
    path, output = exported(run, tmp_path, "--quantize", "int8")
    assert "quantized: int8 (onnxruntime's static quantisation, QDQ, per channel, calibrated on 30 training" in output
    model = onnx.load(path)
    assert any(node.op_type == "QuantizeLinear" for node in model.graph.node)
    assert "macro-F1" in {prop.key: prop.value for prop in model.metadata_props}["quantized"]
    monkeypatch.setattr("hierclf.models.onnx_graph.INT8_TOLERANCE", -1.0)
    result = cli("export", run, "--out", tmp_path / "refused.onnx", "--quantize", "int8")
    assert result.exit_code == 2 and "export --quantize int8: the int8 graph scores" in result.stderr, result.output
    assert not (tmp_path / "refused.onnx").exists()
