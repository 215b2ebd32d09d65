"""Groups, specialists, combiners, evaluate and suggest-groups end to end, on images where two
classes differ only in a detail that vanishes at the coarse model's resolution."""
import csv
import json

import numpy as np
import pytest
import tomli_w
from click.testing import CliRunner

from conftest import DETAIL_CLASSES, write_detail_dataset, write_recipe
from hierclf.cli import main
from hierclf.combine import product
from hierclf.data import load_training_items
from hierclf.oof import load_oof
from hierclf.predict import predict_items
from hierclf.runs import RunDir, read_json, read_npz


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A flat run at 12 px, and a hierarchical one: coarse at 12 px, the patch specialist at 48 px."""
    root = tmp_path_factory.mktemp("hierarchical")
    train_csv = write_detail_dataset(root / "data")
    data = {"csv": str(train_csv), "class_names": list(DETAIL_CLASSES)}
    write_recipe(root / "flat.toml", data, coarse={"img_size": 12, "epochs": 15})
    hier = write_recipe(root / "hier.toml", data, coarse={"img_size": 12, "epochs": 15},
                        hierarchy={"groups": [["checked", "plain"]], "group_names": ["patch"]})
    recipe = __import__("tomllib").loads(hier.read_text())
    recipe["fine"] = {"img_size": 48}
    hier.write_text(tomli_w.dumps(recipe))
    for args in (("fit-coarse", root / "flat.toml", "--out", root / "flat"),
                 ("fit-coarse", hier, "--out", root / "hier"),
                 ("fit-fine", root / "hier")):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return root


def test_specialists_train_only_on_their_group_in_the_coarse_folds(runs):
    run = RunDir(runs / "hier")
    split = read_npz(run.folds_path)
    in_group = np.isin(split["labels"], [2, 3])
    stage = "fine/patch"
    assert read_json(run.fold_dir(stage, 0) / "model.json")["class_names"] == ["checked", "plain"]
    for fold in range(3):
        result = read_json(run.fold_dir(stage, fold) / "result.json")
        assert result["train_rows"] == int((in_group & (split["fold"] != fold)).sum())
        assert result["val_rows"] == int((in_group & (split["fold"] == fold)).sum())
        val = read_npz(run.fold_dir(stage, fold) / "val.npz")
        # it predicts every row of its fold (for the combiners), but targets only its group's rows
        assert sorted(val["ids"]) == sorted(split["ids"][split["fold"] == fold])
        member = dict(zip(split["ids"], in_group))
        assert all((target >= 0) == member[i] for i, target in zip(val["ids"], val["targets"]))
    assert read_json(run.summary_path(stage))["rows"] == int(in_group.sum())


def test_the_specialist_at_higher_resolution_beats_the_flat_model(runs):
    result = cli("evaluate", runs / "hier", "--against", runs / "flat")
    assert result.exit_code == 0, result.output
    report = json.loads((runs / "hier" / "report.json").read_text())
    flat = report["flat"]["macro_f1"]
    assert flat < 0.9  # the flat model cannot see the checkerboard at 12 px
    for combiner in ("product", "routed"):
        assert report["pipelines"][combiner]["macro_f1"] >= flat + 0.15, (combiner, report["pipelines"][combiner])
    assert report["routing"]["accuracy"] >= 0.9
    assert report["pipelines"]["routed"]["specialist_share"]["patch"] == pytest.approx(0.5, abs=0.1)
    assert {"stacking", "product", "routed"} == set(report["pipelines"])
    for name in ("report.md", "oof-predictions.csv", "confusion.png"):
        assert (runs / "hier" / name).stat().st_size > 0
    assert "flat (`" in (runs / "hier" / "report.md").read_text()


def test_evaluate_equals_predict_with_the_same_fold_models(runs):
    run = RunDir(runs / "hier")
    recipe = run.recipe()
    items = load_training_items(recipe.data)
    oof = load_oof(run)
    row_of = {image_id: row for row, image_id in enumerate(items.ids)}
    by_id = {row["id"]: row for row in csv.DictReader((runs / "hier" / "oof-predictions.csv").open())}
    expected_product = product(run.hierarchy(), oof.coarse_probs, oof.specialist_probs)
    for fold in range(3):
        rows = np.flatnonzero(oof.folds == fold)
        subset = items.subset(np.asarray([row_of[i] for i in oof.ids[rows]]))
        for combiner in ("product", "routed"):
            predictions = predict_items(runs / "hier", subset, combiner=combiner, workers=0, folds=[fold])
            names = [DETAIL_CLASSES[label] for label in predictions.labels]
            assert names == [by_id[i][combiner] for i in subset.ids], (fold, combiner)
            if combiner == "product":
                assert np.allclose(predictions.probs, expected_product[rows], atol=1e-5)


def test_predict_with_each_combiner_and_a_trace(runs):
    data = runs / "data" / "train.csv"
    result = cli("predict", runs / "hier", data, "--out", runs / "routed.csv", "--combiner", "routed", "--trace",
                 "--workers", "0")
    assert result.exit_code == 0, result.output
    ran = int(result.stdout.split("specialist 'patch' ran on ")[1].split()[0])
    assert 30 <= ran <= 66  # about half the 96 images are routed to it, not all
    rows = list(csv.DictReader((runs / "routed.csv").open()))
    assert list(rows[0]) == ["id", "label", "coarse", "coarse_confidence", "specialist", "specialist_label",
                             "specialist_confidence"]
    checked = [row for row in rows if row["id"].startswith("checked")]
    assert all(row["coarse"] == "patch" and row["specialist"] == "patch" for row in checked)
    left = [row for row in rows if row["id"].startswith("left")]
    assert all(row["specialist"] == "" and row["specialist_confidence"] == "" for row in left)
    result = cli("predict", runs / "hier", data, "--out", runs / "stacking.csv", "--combiner", "stacking",
                 "--workers", "0")
    assert result.exit_code == 0 and (runs / "hier" / "combiner.json").is_file()
    assert "pickle" not in (runs / "hier" / "combiner.json").read_text()


def test_suggest_groups_finds_the_detail_classes_from_the_flat_run(runs):
    result = cli("suggest-groups", runs / "flat")
    assert result.exit_code == 0, result.output
    assert 'groups = [["checked", "plain"]]' in result.stdout


def test_fit_fine_refusals(runs, tmp_path):
    cases = [
        (("fit-fine", runs / "flat"), "has no groups"),
        (("fit-fine", runs / "hier", "--group", "nope"), "--group 'nope': groups are patch"),
        (("fit-fine", runs / "hier", "--set", "coarse.epochs=3"), "fine.* and combine.* keys only"),
        (("fit-fine", runs / "hier", "--set", "fine.epochs=3"), "was trained with other keys (fine.patch.epochs: 15 → 3)"),
        (("suggest-groups", runs / "hier"), "has groups already"),
    ]
    recipe_before = (runs / "hier" / "recipe.toml").read_text()
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, result.stderr
    assert (runs / "hier" / "recipe.toml").read_text() == recipe_before  # a refused --set changed nothing


def test_a_fine_table_for_no_group_is_refused_before_training(tmp_path, runs):
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(runs / "data" / "train.csv")},
                          hierarchy={"groups": [["checked", "plain"]], "group_names": ["patch"]})
    text = recipe.read_text() + "\n[fine.pach]\nimg_size = 48\n"
    recipe.write_text(text)
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "[fine.pach]: there is no group 'pach'; groups are patch" in result.stderr
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_a_flat_run_split_differently(runs, tmp_path):
    other = write_recipe(tmp_path / "other.toml", {"csv": str(runs / "data" / "train.csv")},
                         coarse={"img_size": 12, "epochs": 1}, folds={"count": 3, "seed": 5})
    assert cli("fit-coarse", other, "--out", tmp_path / "other").exit_code == 0
    result = cli("evaluate", runs / "hier", "--against", tmp_path / "other")
    assert result.exit_code == 2 and "split into other folds" in result.stderr


def test_specialists_can_start_from_the_coarse_model_of_their_own_fold(runs, tmp_path):
    from hierclf.runs import load_weights

    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(runs / "data" / "train.csv")},
                          coarse={"img_size": 12, "epochs": 1},
                          hierarchy={"groups": [["checked", "plain"]], "group_names": ["patch"]})
    assert cli("fit-coarse", recipe, "--out", tmp_path / "run").exit_code == 0
    overrides = ("--set", "fine.init_from_coarse=true", "--set", "fine.lr=1e-12", "--set", "fine.scheduler=none",
                 "--set", "fine.epochs=1", "--set", "fine.img_size=48")
    one = cli("fit-fine", tmp_path / "run", "--group", "patch", "--fold", "2", *overrides)
    assert one.exit_code == 0 and "patch: fold 2 trained" in one.stdout
    assert RunDir(tmp_path / "run").finished_folds("fine/patch") == [2]
    result = cli("fit-fine", tmp_path / "run", "--set", "fine.init_from_coarse=true", "--set", "fine.lr=1e-12", "--set", "fine.scheduler=none",
                 "--set", "fine.epochs=1", "--set", "fine.img_size=48")
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    for fold, other in ((0, 1), (1, 2)):
        coarse = load_weights(run.fold_dir("coarse", fold) / "weights.safetensors")
        elsewhere = load_weights(run.fold_dir("coarse", other) / "weights.safetensors")
        specialist = load_weights(run.fold_dir("fine/patch", fold) / "weights.safetensors")
        backbone = [k for k in coarse if not k.startswith("fc.") and coarse[k].is_floating_point()
                    and "running" not in k]
        assert all(np.allclose(specialist[k].numpy(), coarse[k].numpy(), atol=1e-6) for k in backbone)
        assert not all(np.allclose(specialist[k].numpy(), elsewhere[k].numpy()) for k in backbone)
        assert specialist["fc.weight"].shape[0] == 2
