"""The linear probe: scikit-learn's logistic regression on a frozen pretrained backbone's features,
written as a flat run that predict and evaluate read as any other."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from conftest import cli, write_csv_dataset, write_recipe, write_weights
from hierclf.data import load_training_items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.models.probe import pooled_features
from hierclf.models.saved import load_model
from hierclf.run.files import read_json, read_npz
from hierclf.run.folder import Run


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 'pretrained' test_resnet (1,000 classes, RGB) saved locally, and a recipe starting from it."""
    root = tmp_path_factory.mktemp("probe")
    write_weights(root / "imagenet.safetensors")
    train_csv = write_csv_dataset(root / "data", per_class=20)
    recipe = write_recipe(root / "recipe.toml", {"csv": str(train_csv)},
                          coarse={"weights": str(root / "imagenet.safetensors"), "epochs": 2})
    return root, recipe, train_csv


def _features(run: Run, fold: int, rows: np.ndarray):
    """The fold model's pooled features and probabilities for `rows`, through the loader predict uses."""
    model, spec = load_model(run.fold_dir("coarse", fold), torch.device("cpu"))
    items = load_training_items(run.recipe.data).subset(rows)
    loader = make_loader(ImageDataset(items, np.zeros((len(rows), 1), dtype=np.int64),
                                      build_transform(spec.img_size, spec.mean, spec.std, "none"), spec.in_chans),
                         8, workers=0, device=torch.device("cpu"))
    features, order = pooled_features(model, loader, torch.device("cpu"), amp=False)
    with torch.no_grad():
        probs = torch.softmax(model.get_classifier()(torch.from_numpy(features)), 1).numpy()
    return features[np.argsort(order)], probs[np.argsort(order)]


def test_the_probe_is_scikit_learns_regression_folded_into_the_classifier(pretrained):
    root, recipe, _ = pretrained
    result = cli("-q", "probe", recipe, "--out", root / "probe", "--c", "0.5")
    assert result.exit_code == 0, result.output
    run = Run.open(root / "probe")
    assert run.hierarchy.is_flat and read_json(root / "probe" / "probe.json")["C"] == [0.5] * 3
    labels, fold_of_row = run.folds.labels, run.folds.fold
    for fold in range(3):
        every = np.arange(len(labels))
        features, probs = _features(run, fold, every)
        train, val = fold_of_row != fold, fold_of_row == fold
        scaler = StandardScaler().fit(features[train])
        expected = LogisticRegression(C=0.5, max_iter=2000).fit(scaler.transform(features[train]), labels[train])
        np.testing.assert_allclose(probs, expected.predict_proba(scaler.transform(features)), atol=1e-5)
        saved = read_npz(run.fold_dir("coarse", fold) / "val.npz")
        np.testing.assert_allclose(saved["probs"], probs[val], atol=1e-5)
    summary = read_json(root / "probe" / "coarse" / "summary.json")
    assert summary["oof_macro_f1"] > 0.7  # three classes: chance is 0.33
    assert "linear probe out-of-fold" in result.output


def test_a_run_is_probed_on_its_own_folds_and_scored_beside_it(pretrained, tmp_path):
    root, recipe, train_csv = pretrained
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run").exit_code == 0
    result = cli("-q", "probe", tmp_path / "run", "--out", tmp_path / "probe")
    assert result.exit_code == 0, result.output
    assert Run.open(tmp_path / "probe").folds.matches(Run.open(tmp_path / "run").folds)
    evaluated = cli("evaluate", tmp_path / "run", "--control", tmp_path / "probe")
    assert evaluated.exit_code == 0, evaluated.output
    report = read_json(tmp_path / "run" / "report.json")
    probe, run_f1 = report["controls"][0], report["pipelines"]["flat"]["macro_f1"]
    assert probe["probe"] and report["controls"][0]["paired_difference"]
    verdict = [line for line in report["verdict"] if "the linear probe" in line]
    assert len(verdict) == 1 and ("fine-tuning lost what the pretrained backbone knew" in verdict[0]) == \
        (run_f1 <= probe["macro_f1"])
    assert verdict[0] in evaluated.output and "  probe " in evaluated.output
    predicted = cli("predict", tmp_path / "probe", train_csv, "--out", tmp_path / "probe.csv")
    assert predicted.exit_code == 0, predicted.output


def test_a_probe_needs_a_pretrained_backbone(tmp_path):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=6)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(train_csv)})
    result = cli("probe", recipe, "--out", tmp_path / "probe")
    assert result.exit_code == 2 and "coarse.weights" in result.output and not (tmp_path / "probe").exists()


def test_a_probe_is_not_probed_again(pretrained, tmp_path):
    root, recipe, _ = pretrained
    assert cli("-q", "probe", recipe, "--out", tmp_path / "probe").exit_code == 0
    result = cli("probe", tmp_path / "probe", "--out", tmp_path / "again")
    assert result.exit_code == 2 and "itself a linear probe" in result.output


def test_a_heads_recipe_is_probed_over_its_joint_classes_on_its_folds(tmp_path):
    """The probe of attribute heads is flat over their joint classes, split as the heads run is,
    so evaluate can set it beside that run."""
    from conftest import MASK_HEADS, mask_recipe, write_mask_dataset
    write_weights(tmp_path / "imagenet.safetensors")
    images = write_mask_dataset(tmp_path / "data", people_per_kind=3)
    recipe = mask_recipe(tmp_path / "heads.toml", images, {"heads": MASK_HEADS})
    weights = f"coarse.weights={tmp_path / 'imagenet.safetensors'}"
    result = cli("-q", "probe", recipe, "--out", tmp_path / "probe", "--set", weights)
    assert result.exit_code == 0, result.output
    probe = Run.open(tmp_path / "probe")
    assert probe.hierarchy.is_flat and probe.hierarchy.class_names[:2] == ("wear/male/<30", "wear/male/30-59")
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "heads", "--set", weights,
               "--set", "coarse.epochs=1").exit_code == 0
    assert Run.open(tmp_path / "heads").folds.matches(probe.folds)
    assert cli("evaluate", tmp_path / "heads", "--control", tmp_path / "probe").exit_code == 0


def test_a_probe_holds_its_folder_and_a_second_call_keeps_what_is_done(pretrained, tmp_path):
    """Two probes into one folder at once: the second stops naming the first (no fold gets two
    epoch lines); a finished probe asked again keeps its folds, each with its one line."""
    from hierclf.run.locks import holding
    from hierclf.run.fold_files import read_history

    root, recipe, _ = pretrained
    assert cli("-q", "probe", recipe, "--out", tmp_path / "probe").exit_code == 0
    before = {fold: (tmp_path / "probe" / "coarse" / f"fold-{fold}" / "result.json").read_text() for fold in range(3)}
    with holding(tmp_path / "probe" / "coarse", "fitting the linear probe elsewhere", lock=".probe.lock"):
        result = cli("-q", "probe", recipe, "--out", tmp_path / "probe")
    assert result.exit_code == 2 and "is in use: fitting the linear probe elsewhere" in result.stderr, result.output
    assert cli("-q", "probe", recipe, "--out", tmp_path / "probe").exit_code == 0
    for fold in range(3):
        folder = tmp_path / "probe" / "coarse" / f"fold-{fold}"
        assert len(read_history(folder)) == 1 and (folder / "result.json").read_text() == before[fold]
    assert read_json(tmp_path / "probe" / "probe.json")["C"] == [read_json(tmp_path / "probe" / "coarse" / f"fold-{fold}"
                                                                          / "result.json")["C"] for fold in range(3)]
