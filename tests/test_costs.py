"""What a pipeline costs, read from its run folders."""
import json

import pytest

from hierclf.costs import inference_cost, stage_training_cost, training_cost
from hierclf.files import read_json
from hierclf.runs import Run


def test_training_cost_counts_every_folds_images_pixels_and_seconds(detail_runs):
    run = Run.open(detail_runs / "hier")
    stage = run.specialist_stages["patch"]
    images = seconds = 0.0
    for fold in range(3):
        result = read_json(run.fold_dir(stage.name, fold) / "result.json")
        images += result["train_rows"] * result["epochs_run"]
        lines = (run.fold_dir(stage.name, fold) / "metrics.jsonl").read_text().splitlines()
        seconds += sum(json.loads(line)["seconds"] for line in lines)
    cost = stage_training_cost(run, stage)
    assert cost.images == images > 0 and cost.seconds == pytest.approx(seconds) and seconds > 0
    assert cost.megapixels == pytest.approx(images * 48 * 48 / 1e6)  # the specialist sees 48 px
    total = training_cost(run)
    assert total["images"] == pytest.approx(sum(s["images"] for s in total["stages"].values()))
    assert set(total["stages"]) == {"coarse", "fine/patch"}


def test_a_flat_coarse_runs_cost_is_the_pipelines_too(detail_runs):
    linked, flat = Run.open(detail_runs / "linked"), Run.open(detail_runs / "flat")
    assert training_cost(linked)["stages"]["coarse"] == training_cost(flat)["stages"]["coarse"]
    specialist = training_cost(linked)["stages"]["fine/patch"]["images"]
    assert training_cost(linked)["images"] == pytest.approx(training_cost(flat)["images"] + specialist)


def test_inference_cost_counts_fold_models_views_and_the_share_a_specialist_runs_on(detail_runs):
    run = Run.open(detail_runs / "hier")
    assert inference_cost(run) == pytest.approx({"passes": 6.0, "megapixels": 3 * (12 ** 2 + 48 ** 2) / 1e6})
    routed = inference_cost(run, {"patch": 0.5})
    assert routed["passes"] == pytest.approx(4.5)
    assert inference_cost(Run.open(detail_runs / "flat"))["passes"] == 3.0
