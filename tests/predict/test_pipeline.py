"""Predicting with a run: fold models soft-voted, the run's combiner, TTA, ensembles of runs; the
run folder only read."""
import csv

import numpy as np
import pytest
import torch

from conftest import CLASSES, DETAIL_CLASSES, cli, mask_image, write_tree_dataset
from hierclf.data import Items, load_input_items
from hierclf.data.dataset import build_transform
from hierclf.data.images import decode_image
from hierclf.runtime.devices import resolve_device
from hierclf.errors import RecipeError
from hierclf.data.labels import encode_factors
from hierclf.models.saved import load_model
from hierclf.predict.pipeline import Inference, predict_items, predict_runs
from hierclf.predict.stage_models import StageModels
from hierclf.run.folder import Run
from hierclf.run.scored import read_scores

QUICK = Inference(batch_size=64, workers=0)


def rows_of(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def probs_of(rows, classes):
    return np.array([[float(row[f"prob_{c}"]) for c in classes] for row in rows])


def test_predict_on_training_images_equals_the_fold_models_soft_vote(flat_run, tmp_path):
    root, _, train_csv, _ = flat_run
    out = tmp_path / "train-predictions.csv"
    result = cli("predict", root, train_csv, "--out", out, "--probs", "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.stdout and "specialist" not in result.stdout
    rows = rows_of(out)
    assert len(rows) == 60 and set(rows[0]) == {"id", "label"} | {f"prob_{c}" for c in CLASSES}
    run = Run.open(root)
    models = [load_model(run.fold_dir("coarse", fold), torch.device("cpu")) for fold in range(3)]
    spec = models[0][1]
    transform = build_transform(spec.img_size, spec.mean, spec.std)
    for row in rows[::7]:
        image = transform(image=decode_image(train_csv.parent / "train" / f"{row['id']}.png", 1))["image"][None]
        with torch.no_grad():
            expected = torch.stack([torch.softmax(m(image), 1)[0] for m, _ in models]).mean(0).numpy()
        got = np.array([float(row[f"prob_{c}"]) for c in spec.class_names])
        assert np.allclose(got, expected, atol=1e-5)
        assert row["label"] == spec.class_names[int(expected.argmax())]


def test_predict_on_a_class_tree_scores_it_and_on_a_folder_labels_it(flat_run, tmp_path):
    root = flat_run[0]
    tree = write_tree_dataset(tmp_path / "tree", per_class=5)
    result = cli("predict", root, tree, "--out", tmp_path / "tree.csv", "--workers", "0")
    assert result.exit_code == 0 and "accuracy" in result.stdout
    assert float(result.stdout.split("accuracy ")[1].split()[0]) >= 0.8
    result = cli("predict", root, tree / "right", "--out", tmp_path / "flat.csv", "--workers", "0")
    assert result.exit_code == 0 and "accuracy" not in result.stdout  # no labels: nothing to score
    labels = [row["label"] for row in rows_of(tmp_path / "flat.csv")]
    assert len(labels) == 5 and labels.count("right") >= 4  # the images of the right-hand bar


def test_tta_moves_the_probabilities_not_the_labels(flat_run, tmp_path):
    root, _, train_csv, _ = flat_run
    plain, flipped = tmp_path / "plain.csv", tmp_path / "tta.csv"
    assert cli("predict", root, train_csv, "--out", plain, "--probs", "--workers", "0").exit_code == 0
    tta = cli("predict", root, train_csv, "--out", flipped, "--probs", "--workers", "0", "--tta", "vflip")
    assert tta.exit_code == 0, tta.output
    # the bar's column says the class: a vertical flip keeps it, so TTA keeps the labels but moves the probabilities
    rows_plain, rows_tta = rows_of(plain), rows_of(flipped)
    assert [r["label"] for r in rows_plain] == [r["label"] for r in rows_tta]
    assert any(r["prob_left"] != s["prob_left"] for r, s in zip(rows_plain, rows_tta))


def test_each_combiner_predicts_and_the_run_folder_is_only_read_but_for_the_score(detail_runs, tmp_path):
    data = detail_runs / "data" / "train.csv"
    scored = detail_runs / "hier" / "scored.jsonl"
    before = {p: p.stat().st_mtime_ns for p in (detail_runs / "hier").rglob("*") if p != scored}
    recorded = len(read_scores(detail_runs / "hier"))
    result = cli("predict", detail_runs / "hier", data, "--out", tmp_path / "routed.csv", "--combiner", "routed",
                 "--trace", "--workers", "0")
    assert result.exit_code == 0, result.output
    ran = int(result.stdout.split("specialist 'patch' ran on ")[1].split()[0])
    assert 55 <= ran <= 105  # about half the 160 images are routed to it, not all
    rows = rows_of(tmp_path / "routed.csv")
    assert list(rows[0]) == ["id", "label", "coarse", "coarse_confidence", "specialist", "specialist_label",
                             "specialist_confidence"]
    checked = [row for row in rows if row["id"].startswith("checked")]
    assert all(row["coarse"] == "patch" and row["specialist"] == "patch" for row in checked)
    left = [row for row in rows if row["id"].startswith("left")]
    assert all(row["specialist"] == "" and row["specialist_confidence"] == "" for row in left)
    for combiner in ("stacking", "product"):
        result = cli("predict", detail_runs / "hier", data, "--out", tmp_path / f"{combiner}.csv", "--combiner",
                     combiner, "--workers", "0")
        assert result.exit_code == 0 and "ran on 160 of 160 images" in result.stdout, result.output
    # nothing written but one line of scored.jsonl per prediction of labelled images
    assert {p: p.stat().st_mtime_ns for p in (detail_runs / "hier").rglob("*") if p != scored} == before
    assert [entry["combiner"] for entry in read_scores(detail_runs / "hier")[recorded:]] == ["routed", "stacking",
                                                                                             "product"]
    result = cli("predict", detail_runs / "hier", data, "--out", tmp_path / "x.csv", "--combiner", "average")
    assert result.exit_code == 2 and "--combiner 'average': no such combiner" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_a_stage_that_trains_channels_last_predicts_in_channels_last_to_the_same_probabilities(mask_runs):
    import dataclasses

    run = Run.open(mask_runs / "heads")
    rng = np.random.default_rng(6)
    items = Items.from_arrays(np.stack([mask_image(m, g, a, rng) for m in range(3) for g in range(2) for a in range(3)]))
    stage = run.coarse_stage
    fast = dataclasses.replace(stage, config=dataclasses.replace(stage.config, channels_last=True))
    cpu = resolve_device("cpu")
    plain, last = StageModels(run, stage, cpu, None, QUICK), StageModels(run, fast, cpu, None, QUICK)
    kernels = [p for model in last.models for p in model.parameters() if p.ndim == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in plain.models[0].parameters()
                   if p.ndim == 4)
    assert np.allclose(last.probs(items), plain.probs(items), atol=1e-5)


def test_product_is_the_heads_product_with_the_specialist_in_place_of_age(mask_runs):
    run = Run.open(mask_runs / "heads")
    rng = np.random.default_rng(5)
    values = np.array([(m, g, a) for m in range(3) for g in range(2) for a in range(3)])
    items = Items.from_arrays(np.stack([mask_image(*row, rng) for row in values]))
    predictions = predict_items(run, items, combiner="product", inference=Inference(workers=0, device="cpu"))
    cpu = resolve_device("cpu")
    coarse = StageModels(run, run.coarse_stage, cpu, None, QUICK).probs(items)
    age = StageModels(run, run.specialist_stages["age"], cpu, None, QUICK).probs(items)
    mask, gender, coarse_age = coarse[:, :3], coarse[:, 3:5], coarse[:, 5:]
    expected = np.einsum("nm,ng,na->nmga", mask, gender, age).reshape(len(items), 18)
    assert np.allclose(predictions.probs.sum(1), 1.0)
    assert np.allclose(predictions.probs, expected, atol=1e-6)
    with_coarse_age = np.einsum("nm,ng,na->nmga", mask, gender, coarse_age).reshape(len(items), 18)
    assert np.abs(with_coarse_age - predictions.probs).max() > 1e-3  # the specialist did replace the head
    assert (predictions.labels == encode_factors(values, (3, 2, 3))).mean() > 0.7
    with pytest.raises(RecipeError, match="nothing to route"):
        predict_items(run, items, combiner="routed", inference=Inference(workers=0))
    # the coarse stage alone: its own heads' product, the age specialist never loaded nor run
    alone = predict_items(run, items, combiner="coarse", inference=Inference(workers=0, device="cpu"))
    assert np.allclose(alone.probs, with_coarse_age, atol=1e-6) and alone.specialist_rows == {}


def test_several_runs_are_soft_voted_with_weights(flat_run, tmp_path):
    root, recipe, train_csv, _ = flat_run
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "ens", "--seeds", "1,2", "--fold", "0",
                 "--set", "coarse.epochs=2")
    assert result.exit_code == 0, result.output
    runs = [Run.open(tmp_path / "ens" / "seed-1"), Run.open(tmp_path / "ens" / "seed-2")]
    assert [run.recipe.coarse.seed for run in runs] == [1, 2] and runs[0].folds.matches(runs[1].folds)
    files = sorted((train_csv.parent / "train").glob("*.png"))[:12]
    items = Items.from_arrays(np.stack([decode_image(path, 1)[..., 0] for path in files]))
    a, b = (predict_items(run, items, inference=Inference(workers=0)).probs for run in runs)
    assert not np.allclose(a, b, atol=1e-3)  # the seeds made different models
    both = predict_runs(runs, items, weights=[1, 3], inference=Inference(workers=0))
    assert np.allclose(both.probs, (a + 3 * b) / 4, atol=1e-6)


def test_a_hierarchy_over_a_flat_run_predicts_without_writing_into_either_folder(detail_runs, tmp_path):
    data = detail_runs / "data" / "train.csv"
    folders = (detail_runs / "linked", detail_runs / "flat")
    before = {p: p.stat().st_mtime_ns for folder in folders for p in folder.rglob("*")}
    items = load_input_items(data, DETAIL_CLASSES)
    flat = predict_items(detail_runs / "flat", items, inference=Inference(workers=0))
    for combiner in ("product", "routed", "stacking", "blend"):
        predictions = predict_items(detail_runs / "linked", items, combiner=combiner, trace=True,
                                    inference=Inference(workers=0))
        # P(group) is the flat run's probabilities summed over the group: the coarse confidence shows it
        grouped = np.stack([flat.probs[:, 0], flat.probs[:, 1], flat.probs[:, 2] + flat.probs[:, 3]], axis=1)
        assert np.allclose(predictions.trace["coarse_confidence"], grouped.max(1), atol=1e-6), combiner
    assert {p: p.stat().st_mtime_ns for folder in folders for p in folder.rglob("*")} == before


def test_a_fold_with_nan_weights_is_refused_not_predicted(flat_run, tmp_path):
    import shutil

    from hierclf.run.files import load_weights, save_weights

    shutil.copytree(flat_run[0], tmp_path / "run")
    weights = tmp_path / "run" / "coarse" / "fold-1" / "weights.safetensors"
    state = load_weights(weights)
    state["fc.bias"][0] = float("nan")
    save_weights(weights, state)
    result = cli("predict", tmp_path / "run", flat_run[2], "--out", tmp_path / "p.csv", "--workers", "0")
    assert result.exit_code == 2 and "fold-1/weights.safetensors: tensor 'fc.bias' holds NaN" in result.stderr
    assert not (tmp_path / "p.csv").exists()
