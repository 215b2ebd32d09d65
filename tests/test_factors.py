"""Factorised labels end to end: the mask competition's folder layout, one head per attribute,
a head specialist, the product of heads, and the per-head reports, on shapes whose colour, form
and size are the mask, gender and age."""
import csv

import numpy as np
import pytest
import tomli_w
from click.testing import CliRunner

from conftest import TINY_STAGE, mask_image, write_mask_dataset
from hierclf.cli import main
from hierclf.data import Items
from hierclf.devices import resolve_device
from hierclf.evaluate import evaluate_run
from hierclf.hierarchy import decode_factors, encode_factors
from hierclf.models import create_model
from hierclf.predict import StageModels, predict_items
from hierclf.recipe import recipe_from_dict
from hierclf.runs import RunDir, load_weights, read_json, read_npz
from hierclf.train import fit_coarse
from hierclf.train.loop import seed_everything

HEADS = {"mask": ["wear", "incorrect", "not_wear"], "gender": ["male", "female"], "age": ["<30", "30-59", ">=60"]}
STAGE = {**TINY_STAGE, "img_size": 32, "in_chans": 3, "epochs": 8, "batch_size": 16}


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def recipe_file(path, images, hierarchy=None, heads=None, fine=None):
    recipe = {"data": {"mask_images": str(images)}, "folds": {"count": 3, "seed": 0}, "coarse": STAGE}
    recipe.update({key: value for key, value in (("hierarchy", hierarchy), ("heads", heads), ("fine", fine)) if value})
    path.write_text(tomli_w.dumps(recipe))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A multi-head run with an age specialist at 48 px, the flat 18-class run on the same folds,
    and a run with one model per attribute whose age specialist starts from its age model."""
    root = tmp_path_factory.mktemp("factors")
    images = write_mask_dataset(root / "data", people_per_kind=4)
    recipe_file(root / "heads.toml", images, {"heads": HEADS}, heads={"age": {"label_smoothing": 0.1}},
                fine={"age": {"img_size": 48}})
    recipe_file(root / "flat.toml", images)
    recipe_file(root / "separate.toml", images, {"heads": HEADS, "separate": True},
                fine={"age": {"init_from_coarse": True, "epochs": 4}})
    for args in (("fit-coarse", root / "heads.toml", "--out", root / "heads"), ("fit-fine", root / "heads"),
                 ("fit-coarse", root / "flat.toml", "--out", root / "flat"),
                 ("fit-coarse", root / "separate.toml", "--out", root / "separate"), ("fit-fine", root / "separate")):
        result = cli("-q", *args)
        assert result.exit_code == 0, result.output
    return root


def test_the_multi_head_model_learns_every_attribute(runs):
    summary = read_json(RunDir(runs / "heads").summary_path("coarse"))
    heads = summary["heads"]
    # chance: 0.33 (mask), 0.5 (gender), 0.33 (age) macro-F1; 1/18 for the joint class
    assert {name: head["size"] for name, head in heads.items()} == {"mask": 3, "gender": 2, "age": 3}
    assert all(head["oof_macro_f1"] > 0.8 for head in heads.values()), heads
    assert summary["oof_macro_f1"] > 0.6
    metrics = (RunDir(runs / "heads").fold_dir("coarse", 0) / "metrics.jsonl").read_text()
    assert '"val_age_macro_f1"' in metrics and '"val_mask_accuracy"' in metrics


def test_folds_keep_each_person_on_one_side(runs):
    split = read_npz(RunDir(runs / "heads").folds_path)
    people = np.asarray([image_id.split("_")[0] for image_id in split["ids"]])
    assert all(len(np.unique(split["fold"][people == person])) == 1 for person in np.unique(people))
    assert len(np.unique(split["fold"])) == 3


def test_product_is_the_heads_product_with_the_specialist_in_place_of_age(runs):
    run = RunDir(runs / "heads")
    rng = np.random.default_rng(5)
    values = np.array([(m, g, a) for m in range(3) for g in range(2) for a in range(3)])
    items = Items.from_arrays(np.stack([mask_image(*row, rng) for row in values]))
    predictions = predict_items(run.root, items, combiner="product", workers=0)
    cpu = resolve_device("cpu")
    coarse = StageModels(run, "coarse", cpu, None, 3, 64, 0).probs(items)
    age = StageModels(run, "fine/age", cpu, None, 3, 64, 0).probs(items)
    mask, gender, coarse_age = coarse[:, :3], coarse[:, 3:5], coarse[:, 5:]
    expected = np.einsum("nm,ng,na->nmga", mask, gender, age).reshape(len(items), 18)
    assert np.allclose(predictions.probs.sum(1), 1.0)
    assert np.allclose(predictions.probs, expected, atol=1e-6)
    with_coarse_age = np.einsum("nm,ng,na->nmga", mask, gender, coarse_age).reshape(len(items), 18)
    assert np.abs(with_coarse_age - predictions.probs).max() > 1e-3  # the specialist did replace the head
    assert (predictions.labels == encode_factors(values, (3, 2, 3))).mean() > 0.7


def test_evaluate_reports_each_head_beside_the_flat_model(runs):
    report = evaluate_run(runs / "heads", against=runs / "flat")
    assert set(report["pipelines"]) == {"product", "stacking"} and report["chosen"] == "product"
    heads = report["heads"]
    assert set(heads) == {"mask", "gender", "age"} and "specialist" in heads["age"] and "specialist" not in heads["mask"]
    assert heads["age"]["product"] == heads["age"]["specialist"]  # the product takes age from the specialist
    assert heads["mask"]["product"] == heads["mask"]["coarse"]
    assert report["flat"]["macro_f1"] > 0.3 and len(report["flat"]["per_class"]) == 18
    markdown = (runs / "heads" / "report.md").read_text()
    assert "| head | coarse macro-F1 | specialist macro-F1 |" in markdown and "| age |" in markdown
    output = cli("evaluate", runs / "heads").output
    assert "head age" in output and "specialist" in output


def test_predict_trace_and_per_head_scores(runs, tmp_path):
    images = runs / "data" / "images"
    chosen = sorted(images.iterdir())[::4]
    with (tmp_path / "input.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "mask", "gender", "age"])
        for person in chosen:
            gender, years = person.name.split("_")[1], int(person.name.split("_")[3])
            age = HEADS["age"][(years >= 30) + (years >= 60)]
            writer.writerow([f"{person.name}/mask1.png", "wear", gender, age])
            writer.writerow([f"{person.name}/normal.png", "not_wear", gender, age])
    result = cli("predict", runs / "heads", tmp_path / "input.csv", "--images", images, "--out", tmp_path / "p.csv",
                 "--trace")
    assert result.exit_code == 0, result.output
    for name in HEADS:
        assert f"head {name}: macro-F1" in result.output
    with (tmp_path / "p.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(chosen)
    assert {"mask", "mask_confidence", "gender", "age", "age_by"} <= set(rows[0])
    assert {row["age_by"] for row in rows} == {"specialist"} and {row["mask_by"] for row in rows} == {"coarse"}
    assert all(row["label"] == f"{row['mask']}/{row['gender']}/{row['age']}" for row in rows)
    result = cli("predict", runs / "heads", tmp_path / "input.csv", "--images", images, "--out", tmp_path / "i.csv",
                 "--index")
    assert result.exit_code == 0, result.output
    with (tmp_path / "i.csv").open() as handle:
        indices = [int(row["label"]) for row in csv.DictReader(handle)]
    names = [row["label"] for row in rows]
    decoded = decode_factors(np.asarray(indices), (3, 2, 3))
    assert ["/".join(HEADS[head][value] for head, value in zip(HEADS, row)) for row in decoded] == names


def test_separate_models_learn_and_their_age_specialist(runs):
    run = RunDir(runs / "separate")
    weights = load_weights(run.fold_dir("coarse", 0) / "weights.safetensors")
    assert {name.split(".")[1] for name in weights} == {"mask", "gender", "age"}
    heads = read_json(run.summary_path("coarse"))["heads"]
    assert all(head["oof_macro_f1"] > 0.7 for head in heads.values()), heads
    assert read_json(run.summary_path("fine/age"))["oof_macro_f1"] > 0.7


def test_a_head_with_loss_weight_zero_is_never_trained(tmp_path):
    """The recipe's per-head loss keys reach the training loop: age's head keeps its initial weights."""
    rng = np.random.default_rng(0)
    values = np.array([(m, g, a) for m in range(3) for g in range(2) for a in range(3)] * 3)
    images = np.stack([mask_image(*row, rng, size=16) for row in values])
    stage = {**STAGE, "img_size": 16, "epochs": 2, "weight_decay": 0.0}
    recipe = recipe_from_dict({"folds": {"count": 3}, "coarse": stage, "hierarchy": {"heads": {"mask": 3, "gender": 2, "age": 3}},
                               "heads": {"age": {"weight": 0.0}}})
    items = Items.from_arrays(images, labels=encode_factors(values, (3, 2, 3)))  # joint labels, class names 0..17
    fit_coarse(recipe, tmp_path / "run", only_fold=0, items=items)
    trained = load_weights(RunDir(tmp_path / "run").fold_dir("coarse", 0) / "weights.safetensors")
    seed_everything(recipe.coarse.seed + 0)
    initial, _ = create_model(recipe.coarse, tuple("abcdefgh"), heads=(("mask", 3), ("gender", 2), ("age", 3)))
    assert np.array_equal(trained["heads.age.weight"].numpy(), initial.heads["age"].weight.detach().numpy())
    assert not np.array_equal(trained["heads.mask.weight"].numpy(), initial.heads["mask"].weight.detach().numpy())


def test_refusals_in_a_run_with_heads(runs, tmp_path):
    cases = [
        (("predict", runs / "heads", runs / "data" / "images" / sorted((runs / "data" / "images").iterdir())[0].name,
          "--out", tmp_path / "p.csv", "--combiner", "routed"), "nothing to route; use product or stacking"),
        (("fit-fine", runs / "heads", "--group", "mask"), "head 'mask' has no specialist; add a [fine.mask] table"),
        (("fit-fine", runs / "flat"), "has no groups"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
    bad = recipe_file(tmp_path / "bad.toml", runs / "data" / "images", {"heads": HEADS}, fine={"agee": {"img_size": 8}})
    result = cli("fit-coarse", bad, "--out", tmp_path / "bad")
    assert result.exit_code == 2 and "[fine.agee]: there is no head 'agee'; heads are mask, gender, age" in result.stderr
    assert not (tmp_path / "bad").exists()
