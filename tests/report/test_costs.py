"""What a pipeline costs, read from its run folders."""
import json

import pytest

from hierclf.report.costs import inference_cost, stage_training_cost, training_cost
from hierclf.run.files import read_json
from hierclf.run.folder import Run


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


def test_a_stage_of_separate_models_counts_each_model(tmp_path):
    import numpy as np

    from conftest import TINY_STAGE
    from hierclf.data import Items
    from hierclf.recipe.reading import recipe_from_dict
    from hierclf.train import fit_coarse

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 9)
    images = rng.integers(0, 255, size=(36, 16, 16), dtype=np.uint8)
    items = Items.from_arrays(images, labels, tuple(str(i) for i in range(4)))
    for name, separate in (("shared", False), ("separate", True)):
        recipe = recipe_from_dict({"folds": {"count": 3}, "coarse": {**TINY_STAGE, "epochs": 1},
                                   "hierarchy": {"heads": {"a": 2, "b": 2}, "separate": separate}})
        fit_coarse(recipe, tmp_path / name, items=items)
    shared, separate = (training_cost(Run.open(tmp_path / name)) for name in ("shared", "separate"))
    assert separate["images"] == 2 * shared["images"] == 2 * 24 * 3
    assert inference_cost(Run.open(tmp_path / "separate"))["passes"] == 6.0
