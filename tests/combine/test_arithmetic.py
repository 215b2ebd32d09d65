"""The combiners' and the temperature's arithmetic lives once, as torch modules: routed's module
on every row gives what routing gives, and evaluate, predict and the exported graph all compute
with the very same modules (a change to one shows in all three)."""
import shutil

import numpy as np
import pytest
import torch

from conftest import cli

from hierclf.combine.arithmetic import ProductGraph, on_arrays
from hierclf.combine.product import Product
from hierclf.combine.routed import Routed
from hierclf.combine.temperature import BlockTemperatures
from hierclf.data import Items
from hierclf.export.graph import build_graph
from hierclf.hierarchy.groups import GroupHierarchy
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.report.evaluate import out_of_fold
from hierclf.run.folder import Run
from hierclf.run.outputs import load_oof

SIX = GroupHierarchy.from_config([[1, 3], [2, 4, 5]], ["odd", "rest"], ("a", "b", "c", "d", "e", "f"))


@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_routing_only_where_sent_gives_what_the_module_gives_on_every_row(threshold):
    rng = np.random.default_rng(3)
    coarse = rng.dirichlet(np.ones(3) * 0.5, 300)
    specialists = {"odd": rng.dirichlet(np.ones(2), 300), "rest": rng.dirichlet(np.ones(3), 300)}
    asked = {}

    def run_specialist(name, rows):
        asked[name] = rows
        return specialists[name][rows]

    routed = Routed(threshold)
    outcome = routed.combine(SIX, coarse, ["odd", "rest"], run_specialist)
    probs, labels = on_arrays(routed.module(SIX, ["odd", "rest"]), coarse, [specialists["odd"], specialists["rest"]])
    assert 0 < len(asked["odd"]) < 300 and 0 < len(asked["rest"]) < 300
    assert np.allclose(outcome.probs, probs, atol=1e-12) and np.array_equal(outcome.labels, labels)
    assert np.allclose(probs.sum(1), 1.0)


def pictures(detail_runs, every: int) -> np.ndarray:
    """Every `every`-th training image of the detail runs, N×H×W×C."""
    from PIL import Image

    images = np.stack([np.asarray(Image.open(path))
                       for path in sorted((detail_runs / "data" / "train").rglob("*.png"))[::every]])
    return images if images.ndim == 4 else images[..., None]


def sabotaged_product(self, coarse, specialists):
    """Every row the same answer: the last class, with certainty."""
    fine = torch.zeros(len(coarse), self.terms.spread0.shape[1], dtype=coarse.dtype)
    fine[:, -1] = 1.0
    return fine, fine.argmax(1)


def test_evaluate_predict_and_export_compute_with_the_same_modules(detail_runs, monkeypatch):
    run = Run.open(detail_runs / "hier")
    images = pictures(detail_runs, 13)
    inference = Inference(workers=0, device="cpu")
    honest = predict_items(run, Items.from_arrays(images), "product", inference=inference)
    assert len(set(honest.labels.tolist())) > 1

    monkeypatch.setattr(ProductGraph, "forward", sabotaged_product)
    last = run.hierarchy.num_classes - 1
    assert set(out_of_fold(Product(), run.hierarchy, load_oof(run)).labels.tolist()) == {last}  # evaluate
    assert set(predict_items(run, Items.from_arrays(images), "product", inference=inference).labels.tolist()) == {last}
    with torch.no_grad():
        _, labels = build_graph(run, "product").module(torch.from_numpy(images))
    assert set(labels.tolist()) == {last}  # export


def test_calibration_in_predict_and_in_the_graph_is_one_module(detail_runs, tmp_path, monkeypatch):
    shutil.copytree(detail_runs / "hier", tmp_path / "run")
    assert cli("-q", "fit-fine", tmp_path / "run", "--set", "combine.calibrate=true").exit_code == 0
    run = Run.open(tmp_path / "run")
    images = pictures(detail_runs, 40)
    monkeypatch.setattr(BlockTemperatures, "forward", lambda self, probs: torch.full_like(probs, 0.5))
    predicted = predict_items(run, Items.from_arrays(images), "product", inference=Inference(workers=0, device="cpu"))
    with torch.no_grad():
        graph_probs, _ = build_graph(run, "product").module(torch.from_numpy(images))
    # every stage's output "scaled" to 0.5 everywhere: the coarse stage's three (left, right, patch)
    # renormalised to a third each, the specialist's two halves of the patch's third, in predict
    # and in the graph alike
    assert np.allclose(predicted.probs, graph_probs.numpy(), atol=1e-6)
    assert np.allclose(predicted.probs, [1 / 3, 1 / 3, 1 / 6, 1 / 6])
