"""fit-coarse and predict end to end, through the CLI, on images the tests write."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import CLASSES, write_csv_dataset, write_recipe, write_tree_dataset
from hierclf.cli import main
from hierclf.data.dataset import build_transform
from hierclf.data.images import decode_image
from hierclf.models import load_model
from hierclf.runs import RunDir, read_json, read_npz


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 3-fold run shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("pipeline")
    train_csv = write_csv_dataset(root / "data", per_class=20)
    recipe = write_recipe(root / "recipe.toml", {"csv": str(train_csv)})
    result = cli("fit-coarse", recipe, "--out", root / "run")
    assert result.exit_code == 0, result.output
    return root, recipe, train_csv, result


def test_oof_covers_every_row_once_and_the_model_learns(trained):
    root, _, _, result = trained
    run = RunDir(root / "run")
    oof, folds = read_npz(run.oof_path("coarse")), read_npz(run.folds_path)
    assert sorted(oof["ids"]) == sorted(folds["ids"]) and len(set(oof["ids"])) == 60
    fold_of = dict(zip(folds["ids"], folds["fold"]))
    assert all(fold_of[i] == f for i, f in zip(oof["ids"], oof["fold"]))
    assert np.allclose(oof["probs"].sum(1), 1, atol=1e-4)
    accuracy = (oof["probs"].argmax(1) == oof["targets"]).mean()
    assert accuracy >= 0.8, accuracy  # chance is 1/3
    summary = read_json(run.summary_path("coarse"))
    assert summary["oof_accuracy"] == pytest.approx(accuracy) and len(summary["folds"]) == 3
    assert "coarse out-of-fold (60 rows, 3 folds)" in result.stdout and "middle" in result.stdout
    for fold in range(3):
        names = {p.name for p in run.fold_dir("coarse", fold).iterdir()}
        assert names == {"weights.safetensors", "model.json", "metrics.jsonl", "val.npz", "result.json"}
    assert (run.root / "recipe.toml").is_file() and read_json(run.hierarchy_path)["class_names"] == list(CLASSES)
    assert not list(run.root.rglob("*.tmp"))


def test_rerun_skips_finished_folds(trained):
    root, recipe, _, _ = trained
    weights = RunDir(root / "run").fold_dir("coarse", 0) / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    result = cli("fit-coarse", recipe, "--out", root / "run", "--set", "coarse.workers=1")  # runtime key: allowed
    assert result.exit_code == 0
    assert result.stderr.count("already trained; keeping it") == 3
    assert weights.stat().st_mtime_ns == before


def test_rerun_with_another_recipe_is_refused(trained):
    root, recipe, _, _ = trained
    result = cli("fit-coarse", recipe, "--out", root / "run", "--set", "coarse.epochs=2")
    assert result.exit_code == 2
    assert "made with another recipe (coarse.epochs: 10 → 2)" in result.stderr


def test_predict_on_training_images_equals_the_fold_models_soft_vote(trained):
    root, _, train_csv, _ = trained
    out = root / "train-predictions.csv"
    result = cli("predict", root / "run", train_csv, "--out", out, "--probs", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "macro-F1" in result.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 60 and set(rows[0]) == {"id", "label"} | {f"prob_{c}" for c in CLASSES}
    run = RunDir(root / "run")
    models = [load_model(run.fold_dir("coarse", fold), torch.device("cpu")) for fold in range(3)]
    spec = models[0][1]
    transform = build_transform(spec.img_size, spec.mean, spec.std)
    for row in rows[::7]:
        image = transform(image=decode_image(root / "data" / "train" / f"{row['id']}.png", 1))["image"][None]
        with torch.no_grad():
            expected = torch.stack([torch.softmax(m(image), 1)[0] for m, _ in models]).mean(0).numpy()
        got = np.array([float(row[f"prob_{c}"]) for c in spec.class_names])
        assert np.allclose(got, expected, atol=1e-5)
        assert row["label"] == spec.class_names[int(expected.argmax())]


def test_predict_on_a_folder_and_a_class_tree(trained, tmp_path):
    root, _, _, _ = trained
    tree = write_tree_dataset(tmp_path / "tree", per_class=5)
    result = cli("predict", root / "run", tree, "--out", tmp_path / "tree.csv", "--workers", "0")
    assert result.exit_code == 0 and "accuracy" in result.stdout
    accuracy = float(result.stdout.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.8
    result = cli("predict", root / "run", tree / "right", "--out", tmp_path / "flat.csv", "--workers", "0")
    assert result.exit_code == 0 and "accuracy" not in result.stdout
    labels = [row["label"] for row in csv.DictReader((tmp_path / "flat.csv").open())]
    assert len(labels) == 5 and set(labels) <= set(CLASSES)


def test_user_errors_exit_2_in_one_line(trained, tmp_path):
    root, recipe, _, _ = trained
    cases = [
        (("predict", tmp_path, tmp_path, "--out", tmp_path / "p.csv"), "is not a hierclf run folder"),
        (("predict", root / "run", tmp_path / "missing", "--out", tmp_path / "p.csv"), "does not exist"),
        (("fit-coarse", recipe, "--out", root / "data"), "is not a hierclf run folder; use a new --out"),
        (("fit-coarse", recipe, "--out", tmp_path / "r", "--fold", "7"), "--fold 7: this run has folds 0..2"),
        (("fit-coarse", recipe, "--out", tmp_path / "r", "--set", "coarse.model=resnet_nope"), "timm has no such model"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "p.csv").exists()


def test_folds_one_at_a_time_then_the_summary(tmp_path, csv_dataset):
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)}, coarse={"epochs": 1})
    for fold in (2, 0):
        result = cli("fit-coarse", recipe, "--out", tmp_path / "run", "--fold", fold)
        assert result.exit_code == 0 and "run the other folds" in result.stdout
    run = RunDir(tmp_path / "run")
    assert run.finished_folds("coarse") == [0, 2] and not run.oof_path("coarse").exists()
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 1)
    assert "coarse out-of-fold (60 rows, 3 folds)" in result.stdout and run.oof_path("coarse").is_file()


def test_grouped_rows_stay_in_one_fold_and_groups_merge_classes(tmp_path):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=24, groups_of=4)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 1},
                          hierarchy={"groups": [["left", "middle"]], "group_names": ["lm"]})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    folds = read_npz(run.folds_path)
    group_of = {f"{c}-{i:03d}": f"{c}-g{i // 4}" for c in CLASSES for i in range(24)}
    fold_of_group = {}
    for image_id, fold in zip(folds["ids"], folds["fold"]):
        assert fold_of_group.setdefault(group_of[image_id], fold) == fold
    oof = read_npz(run.oof_path("coarse"))
    assert oof["probs"].shape == (72, 2) and set(oof["targets"]) == {0, 1}
    assert read_json(run.summary_path("coarse"))["classes"] == ["lm", "right"]


def test_a_file_that_is_no_image_stops_the_run_before_anything_is_written(tmp_path, csv_dataset):
    (csv_dataset.parent / "train" / "middle-007.png").write_bytes(b"not a png at all")
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "middle-007.png cannot be decoded" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_an_image_cut_short_fails_cleanly_from_a_loader_worker(tmp_path, csv_dataset):
    """A truncated JPEG passes the header check; decoding it in a DataLoader worker must still end
    in one line naming the file, exit 2, and no finished fold that saw it."""
    from PIL import Image
    images = csv_dataset.parent / "train"
    (images / "middle-007.png").unlink()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(images / "middle-007.jpg", quality=95)
    whole = (images / "middle-007.jpg").read_bytes()
    (images / "middle-007.jpg").write_bytes(whole[: len(whole) // 2])
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)}, coarse={"epochs": 1, "workers": 2})
    done = subprocess.run([sys.executable, "-m", "hierclf", "-q", "fit-coarse", str(recipe), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert "middle-007.jpg cannot be decoded" in done.stderr
    run = RunDir(tmp_path / "run")
    folds = read_npz(run.folds_path)
    fold_with_it = int(folds["fold"][list(folds["ids"]).index("middle-007")])
    assert fold_with_it not in run.finished_folds("coarse") and not run.oof_path("coarse").exists()


def test_fit_ends_with_a_bias_variance_line_and_predict_takes_tta(trained, tmp_path):
    root, _, train_csv, result = trained
    summary = read_json(RunDir(root / "run").summary_path("coarse"))
    assert 0.8 <= summary["train_macro_f1"] <= 1.0 and all("train_macro_f1" in fold for fold in summary["folds"])
    assert "train macro-F1" in result.stdout and summary["diagnosis"] in result.stdout
    plain, flipped = tmp_path / "plain.csv", tmp_path / "tta.csv"
    assert cli("predict", root / "run", train_csv, "--out", plain, "--probs", "--workers", "0").exit_code == 0
    tta = cli("predict", root / "run", train_csv, "--out", flipped, "--probs", "--workers", "0", "--tta", "vflip")
    assert tta.exit_code == 0, tta.output
    # the bar's column says the class: a vertical flip keeps it, so TTA keeps the labels but moves the probabilities
    rows_plain, rows_tta = list(csv.DictReader(plain.open())), list(csv.DictReader(flipped.open()))
    assert [r["label"] for r in rows_plain] == [r["label"] for r in rows_tta]
    assert any(r["prob_left"] != s["prob_left"] for r, s in zip(rows_plain, rows_tta))
    bad = cli("predict", root / "run", train_csv, "--out", tmp_path / "bad.csv", "--tta", "hflip,spin")
    assert bad.exit_code == 2 and "--tta: unknown TTA variant 'spin'" in bad.stderr
    assert not (tmp_path / "bad.csv").exists()


def test_seeds_train_a_run_each_and_predict_soft_votes_them(trained, tmp_path):
    root, recipe, train_csv, _ = trained
    result = cli("fit-coarse", recipe, "--out", tmp_path / "ens", "--seeds", "1,2", "--set", "coarse.epochs=4")
    assert result.exit_code == 0, result.output
    runs = [tmp_path / "ens" / "seed-1", tmp_path / "ens" / "seed-2"]
    assert [RunDir(run).recipe().coarse.seed for run in runs] == [1, 2]
    assert np.array_equal(read_npz(RunDir(runs[0]).folds_path)["fold"], read_npz(RunDir(runs[1]).folds_path)["fold"])
    probs = {}
    for name, args in {"a": [runs[0]], "b": [runs[1]], "ab": [*runs, "--weights", "1,3"]}.items():
        out = tmp_path / f"{name}.csv"
        assert cli("predict", *args, train_csv, "--out", out, "--probs", "--workers", "0").exit_code == 0
        probs[name] = np.array([[float(row[f"prob_{c}"]) for c in CLASSES] for row in csv.DictReader(out.open())])
    assert not np.allclose(probs["a"], probs["b"], atol=1e-3)  # the seeds made different models
    assert np.allclose(probs["ab"], (probs["a"] + 3 * probs["b"]) / 4, atol=1e-5)
    for args, message in [([*runs, "--weights", "1"], "--weights has 1 numbers for 2 runs"),
                          ([runs[0], root / "run", "--trace"], "--trace follows one run's stages"),
                          ([runs[0]], "")]:
        if not message:
            bad = cli("fit-coarse", recipe, "--out", tmp_path / "x", "--seeds", "1,1")
            message = "--seeds '1,1': expected distinct whole numbers"
        else:
            bad = cli("predict", *args, train_csv, "--out", tmp_path / "bad.csv")
        assert bad.exit_code == 2 and message in bad.stderr, bad.output
    assert not (tmp_path / "bad.csv").exists() and not (tmp_path / "x").exists()
