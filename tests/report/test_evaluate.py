"""The whole pipeline scored out-of-fold with every combiner, beside the flat model on the same folds."""
import csv
import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict

from conftest import DETAIL_CLASSES, cli, write_recipe
from hierclf.combine.product import Product, product
from hierclf.combine.stacking import Stacking, stacking_features
from hierclf.data import load_training_items
from hierclf.report.evaluate import evaluate_run, out_of_fold
from hierclf.run.files import read_npz
from hierclf.metrics import scores
from hierclf.run.outputs import load_oof
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.run.folder import Run


@pytest.fixture(scope="module")
def report(detail_runs):
    result = cli("evaluate", detail_runs / "hier", "--against", detail_runs / "flat")
    assert result.exit_code == 0, result.output
    return evaluate_run(detail_runs / "hier", against=detail_runs / "flat").to_dict()


def test_the_specialist_at_higher_resolution_beats_the_flat_model(report, detail_runs):
    flat = report["flat"]["macro_f1"]
    assert flat < 0.9  # the flat model cannot see the checkerboard at 12 px
    routed, product = report["pipelines"]["routed"], report["pipelines"]["product"]
    assert routed["macro_f1"] >= flat + 0.15, routed  # the specialist separates what the flat model cannot
    # the product also weighs the coarse model's confidence in the group, which a tiny model at 12 px
    # does not always have (measured on two machines: product 0.92 to 1.0, flat 0.80 to 0.83)
    assert product["macro_f1"] >= flat + 0.05, product
    assert report["routing"]["accuracy"] >= 0.9
    assert report["pipelines"]["routed"]["specialist_share"]["patch"] == pytest.approx(0.5, abs=0.1)
    assert report["pipelines"]["product"]["specialist_share"]["patch"] == 1.0
    assert {"stacking", "product", "routed"} == set(report["pipelines"]) and report["chosen"] == "product"
    for name in ("report.md", "oof-predictions.csv", "confusion.png"):
        assert (detail_runs / "hier" / name).stat().st_size > 0
    assert json.loads((detail_runs / "hier" / "report.json").read_text()) == report  # report.json is the Report
    from hierclf.hierarchy.sections import markdown_text

    assert f"flat ({markdown_text(detail_runs / 'flat')})" in (detail_runs / "hier" / "report.md").read_text()


def test_evaluate_equals_predict_with_the_same_fold_models(report, detail_runs):
    run = Run.open(detail_runs / "hier")
    items = load_training_items(run.recipe.data)
    oof = load_oof(run)
    row_of = {image_id: row for row, image_id in enumerate(items.ids)}
    with (detail_runs / "hier" / "oof-predictions.csv").open() as handle:
        by_id = {row["id"]: row for row in csv.DictReader(handle)}
    expected_product = product(run.hierarchy, oof.coarse_probs, oof.specialist_probs)
    for fold in range(3):
        rows = np.flatnonzero(oof.folds == fold)
        subset = items.subset(np.asarray([row_of[i] for i in oof.ids[rows]]))
        for combiner in ("product", "routed"):
            predictions = predict_items(run, subset, combiner=combiner, folds=[fold],
                                        inference=Inference(workers=0, device="cpu"))
            names = [DETAIL_CLASSES[label] for label in predictions.labels]
            assert names == [by_id[i][combiner] for i in subset.ids], (fold, combiner)
            if combiner == "product":
                assert np.allclose(predictions.probs, expected_product[rows], atol=1e-5)


def test_a_combiner_that_learns_is_fit_fold_by_fold(detail_runs):
    run = Run.open(detail_runs / "hier")
    oof = load_oof(run)
    features = stacking_features(oof.coarse_probs, [oof.specialist_probs["patch"]])
    reference = cross_val_predict(LogisticRegression(C=1.0, max_iter=2000), features, oof.labels,
                                  cv=PredefinedSplit(oof.folds), method="predict_proba")
    combined = out_of_fold(Stacking(1.0), run.hierarchy, oof)
    assert np.allclose(combined.probs[:, np.unique(oof.labels)], reference, atol=1e-6)
    whole = out_of_fold(Product(), run.hierarchy, oof)  # learns nothing: every row at once
    assert np.array_equal(whole.probs, product(run.hierarchy, oof.coarse_probs, oof.specialist_probs))


def test_evaluate_refuses_a_flat_run_split_differently_or_not_flat(detail_runs, tmp_path):
    other = write_recipe(tmp_path / "other.toml", {"csv": str(detail_runs / "data" / "train.csv")},
                         coarse={"img_size": 12, "epochs": 1}, folds={"count": 3, "seed": 5})
    assert cli("-q", "fit-coarse", other, "--out", tmp_path / "other").exit_code == 0
    result = cli("evaluate", detail_runs / "hier", "--against", tmp_path / "other")
    assert result.exit_code == 2 and "split into other folds" in result.stderr
    result = cli("evaluate", detail_runs / "flat", "--against", detail_runs / "hier")
    assert result.exit_code == 2 and "that run has groups patch; compare against a flat run" in result.stderr


def test_evaluate_reports_each_head_beside_the_flat_model(mask_runs):
    report = evaluate_run(mask_runs / "heads", against=mask_runs / "flat").to_dict()
    assert set(report["pipelines"]) == {"product", "stacking", "coarse"} and report["chosen"] == "product"
    heads = report["heads"]
    # the coarse stage alone is a pipeline of its own: its heads' product, at the coarse stage's cost
    alone, product = report["pipelines"]["coarse"], report["pipelines"]["product"]
    assert alone["training"]["images"] < product["training"]["images"]
    assert list(alone["training"]["stages"]) == ["coarse"] and alone["specialist_share"] == {"age": 0.0}
    assert alone["inference"]["passes"] < product["inference"]["passes"]
    # each specialist beside the coarse head it replaces, on the same rows; a verdict where it is lower
    [age] = report["against_coarse"]
    assert age["part"] == "age" and age["specialist"] == heads["age"]["specialist"]["macro_f1"]
    assert age["coarse"] == heads["age"]["coarse"]["macro_f1"]
    lowered = [line for line in report["verdict"] if "lowers it" in line]
    assert len(lowered) == (age["specialist"] < age["coarse"])
    assert set(heads) == {"mask", "gender", "age"}
    assert "specialist" in heads["age"] and "specialist" not in heads["mask"]
    assert heads["age"]["product"] == heads["age"]["specialist"]  # the product takes age from the specialist
    assert heads["mask"]["product"] == heads["mask"]["coarse"]
    flat = read_npz(Run.open(mask_runs / "flat").oof_path("coarse"))
    assert report["flat"]["macro_f1"] == scores(flat["targets"], flat["probs"].argmax(1), 18)["macro_f1"]
    assert len(report["flat"]["per_class"]) == 18
    markdown = (mask_runs / "heads" / "report.md").read_text()
    assert "| head | coarse macro-F1 | specialist macro-F1 |" in markdown and "| age |" in markdown
    output = cli("evaluate", mask_runs / "heads").output
    assert "head age" in output and "specialist" in output


def test_a_flat_run_is_its_own_one_pipeline(flat_run):
    report = evaluate_run(flat_run[0]).to_dict()
    assert list(report["pipelines"]) == ["flat"] and report["chosen"] == "flat"
    assert report["coarse"]["accuracy"] == pytest.approx(report["pipelines"]["flat"]["accuracy"])


def test_a_hierarchy_over_the_flat_run_is_scored_with_cost_against_it_and_its_controls(detail_runs):
    flat, seed1 = detail_runs / "flat", detail_runs / "flat-seed1"
    result = cli("evaluate", detail_runs / "linked", "--control", f"{flat},{seed1}", "--control", seed1)
    assert result.exit_code == 0, result.output
    report = evaluate_run(detail_runs / "linked", controls=[[flat, seed1], [seed1]]).to_dict()
    assert report["flat"]["run"] == str(flat)  # the coarse run is compared against by default
    assert set(report["pipelines"]) == {"product", "routed", "stacking", "blend", "coarse"}
    # over a flat run, the coarse stage alone is that flat run, at its cost
    assert report["pipelines"]["coarse"]["macro_f1"] == report["flat"]["macro_f1"]
    assert report["pipelines"]["coarse"]["training"]["images"] == report["flat"]["training"]["images"]
    blend = report["pipelines"]["blend"]
    assert blend["macro_f1"] >= report["flat"]["macro_f1"] + 0.1, blend  # the 48 px specialist sees the patch
    # the flat run's probabilities summed over the group are the routing decision
    oof = load_oof(Run.open(detail_runs / "linked"))
    flat_oof = read_npz(Run.open(flat).oof_path("coarse"))
    assert np.array_equal(oof.coarse_probs, flat_oof["probs"])
    assert report["routing"]["accuracy"] == pytest.approx(scores(
        run_fine_to_coarse(detail_runs)[oof.labels], np.stack(
            [flat_oof["probs"][:, 0], flat_oof["probs"][:, 1], flat_oof["probs"][:, 2] + flat_oof["probs"][:, 3]],
            axis=1).argmax(1), 3)["accuracy"])
    # cost: the pipeline's training includes the flat run's; the control of two seeds costs two flat runs
    assert blend["training"]["images"] > report["flat"]["training"]["images"] > 0
    ensemble, single = report["controls"]
    assert ensemble["training"]["images"] == pytest.approx(2 * report["flat"]["training"]["images"])
    assert ensemble["inference"]["passes"] == 6.0 and blend["inference"]["passes"] == 6.0
    seed_oof = read_npz(Run.open(seed1).oof_path("coarse"))
    averaged = (flat_oof["probs"] + seed_oof["probs"]) / 2
    assert ensemble["macro_f1"] == scores(oof.labels, averaged.argmax(1), 4)["macro_f1"]
    members = [scores(oof.labels, p.argmax(1), 4)["macro_f1"] for p in (flat_oof["probs"], seed_oof["probs"])]
    assert ensemble["ensemble_gain"] == pytest.approx(ensemble["macro_f1"] - np.mean(members))
    assert "ensemble_gain" not in single and single["run"] == str(seed1)
    from hierclf.metrics import calibration

    assert report["flat"]["ece"] == pytest.approx(calibration(oof.labels, flat_oof["probs"])["ece"])
    assert ensemble["nll"] == pytest.approx(calibration(oof.labels, averaged)["nll"])
    assert 0 <= blend["ece"] <= 1 and blend["nll"] > 0
    assert (detail_runs / "linked" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    chosen = report["chosen"]
    assert report["verdict"][0].startswith(f"{chosen} beats the flat run")
    paired = report["flat"]["paired_difference"]  # the chosen pipeline minus the flat run, on the same rows
    assert paired["difference"] == pytest.approx(report["pipelines"][chosen]["macro_f1"] - report["flat"]["macro_f1"])
    assert paired["low"] <= paired["difference"] <= paired["high"]
    assert f"95% interval {paired['low'] * 100:+.2f} to {paired['high'] * 100:+.2f}" in report["verdict"][0]
    assert len(report["verdict"]) == 3 and "one fold model" in report["oof_estimates"]
    markdown = (detail_runs / "linked" / "report.md").read_text()
    assert "| images, megapixels, seconds × flat |" in markdown and "one fold model" in markdown
    # the verdict counts what each paid: the 48 px specialist over a 12 px flat run costs far more
    # megapixels than images, and the 2-seed control exactly twice the flat run in both
    mine, flat_cost = report["pipelines"][chosen]["training"], report["flat"]["training"]
    images, megapixels = mine["images"] / flat_cost["images"], mine["megapixels"] / flat_cost["megapixels"]
    assert megapixels > 2 * images
    assert (f"at {images:.2f}× images, {megapixels:.2f}× megapixels, {mine['seconds'] / flat_cost['seconds']:.2f}× "
            f"seconds of the flat run's training against 2.00× images, 2.00× megapixels") in report["verdict"][1]
    assert "control 1" in result.stdout and "inference 6.0 passes/image" in result.stdout
    assert f"{chosen} beats the flat run" in result.stdout


def run_fine_to_coarse(detail_runs):
    return Run.open(detail_runs / "linked").hierarchy.fine_to_coarse


def test_a_hierarchy_that_does_not_beat_its_control_is_reported_as_such(detail_runs):
    report = evaluate_run(detail_runs / "linked", controls=[[detail_runs / "flat"]])
    report.controls[0]["macro_f1"] = 1.5  # a control no pipeline can beat
    assert "does not beat control" in report.verdict[1]
    assert report.to_dict()["verdict"] == report.verdict
    # the control cost less than the hierarchy (the flat run alone): named as the better choice
    assert report.verdict[-1].startswith(f"control {detail_runs / 'flat'} scores as well for less (")
    assert "the training megapixels of" in report.verdict[-1] and len(report.verdict) == 3


def test_a_hierarchy_beyond_the_noise_of_every_cheaper_run_names_none(detail_runs):
    report = evaluate_run(detail_runs / "linked", controls=[[detail_runs / "flat"]])
    for other in (report.flat, report.controls[0]):
        other["paired_difference"] = {"difference": 0.02, "low": 0.01, "high": 0.03}
    assert not any("scores as well for less" in line for line in report.verdict)
    report.flat["paired_difference"] = {"difference": 0.02, "low": -0.01, "high": 0.03}  # within the noise
    assert report.verdict[-1].startswith("the flat run scores as well for less")


def test_a_control_split_differently_is_refused(detail_runs, tmp_path):
    other = write_recipe(tmp_path / "other.toml", {"csv": str(detail_runs / "data" / "train.csv")},
                         coarse={"img_size": 12, "epochs": 1}, folds={"count": 3, "seed": 5})
    assert cli("-q", "fit-coarse", other, "--out", tmp_path / "other").exit_code == 0
    result = cli("evaluate", detail_runs / "linked", "--control", tmp_path / "other")
    assert result.exit_code == 2 and "--control" in result.stderr and "split into other folds" in result.stderr


def test_class_names_that_markdown_or_html_would_read_are_escaped_in_report_md(tmp_path):
    """A class named <script>…, a|b or one holding a line break broke report.md's tables (report.html
    escaped them): each is shown literally, on one table row."""
    import re

    from conftest import write_csv_dataset
    from hierclf.hierarchy.sections import markdown_text

    train_csv = write_csv_dataset(tmp_path / "data", per_class=6)
    hostile = {"left": "<script>alert(1)</script>", "middle": "a|b", "right": "two\nlines *bold*"}
    rows = list(csv.reader(train_csv.open(newline="")))
    with train_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows([rows[0]] + [[image, hostile[label]] for image, label in rows[1:]])
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 1})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run").exit_code == 0
    assert cli("evaluate", tmp_path / "run").exit_code == 0
    text = (tmp_path / "run" / "report.md").read_text()
    assert "<script>" not in text and "\\<script\\>alert(1)\\</script\\>" in text
    table = text[text.index("## Per class"):].split("\n\n")[1].splitlines()
    assert len(table) == 2 + 3  # header, rule and one row per class
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 6 for line in table), table
    assert markdown_text("two\nlines *bold*") in text and "a\\|b" in text
    assert markdown_text("x_y`z`[l](u)&amp;~") == "x\\_y\\`z\\`\\[l\\](u)\\&amp;\\~"
