"""fit-coarse and fit-fine as a library: every check before the run folder is touched."""
import numpy as np

from conftest import CLASSES, cli, mask_recipe, write_csv_dataset, write_recipe
from hierclf.run.files import read_json, read_npz
from hierclf.run.folder import Run


def test_grouped_rows_stay_in_one_fold_and_groups_merge_classes(tmp_path):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=24, groups_of=4)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 1},
                          hierarchy={"groups": [["left", "middle"]], "group_names": ["lm"]})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    run = Run.open(tmp_path / "run")
    group_of = {f"{c}-{i:03d}": f"{c}-g{i // 4}" for c in CLASSES for i in range(24)}
    fold_of_group = {}
    for image_id, fold in zip(run.folds.ids, run.folds.fold):
        assert fold_of_group.setdefault(group_of[image_id], fold) == fold
    oof = read_npz(run.oof_path("coarse"))
    assert oof["probs"].shape == (72, 2) and set(oof["targets"]) == {0, 1}
    assert read_json(run.summary_path("coarse"))["classes"] == ["lm", "right"]
    assert not run.combiner_path.exists()  # the stacking combiner waits for the specialist


def test_the_folds_keep_each_person_on_one_side(mask_runs):
    folds = Run.open(mask_runs / "heads").folds
    people = np.asarray([image_id.split("_")[0] for image_id in folds.ids])
    assert all(len(np.unique(folds.fold[people == person])) == 1 for person in np.unique(people))
    assert len(np.unique(folds.fold)) == 3


def test_fit_fine_refusals_change_nothing(detail_runs):
    cases = [
        (("fit-fine", detail_runs / "flat"), "has no groups"),
        (("fit-fine", detail_runs / "hier", "--group", "nope"), "--group 'nope': groups are patch"),
        (("fit-fine", detail_runs / "hier", "--set", "coarse.epochs=3"), "fine.* and combine.* keys only"),
        (("fit-fine", detail_runs / "hier", "--set", "fine.epochs=3"),
         "was trained with other keys (fine.patch.epochs: 8 → 3)"),
        (("fit-fine", detail_runs / "hier", "--fold", "5"), "--fold 5: this run has folds 0..2"),
    ]
    recipe_before = (detail_runs / "hier" / "recipe.toml").read_text()
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, result.stderr
    assert (detail_runs / "hier" / "recipe.toml").read_text() == recipe_before  # a refused --set changed nothing


def test_a_fine_table_for_no_group_is_refused_before_training(tmp_path, detail_runs):
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(detail_runs / "data" / "train.csv")},
                          hierarchy={"groups": [["checked", "plain"]], "group_names": ["patch"]})
    recipe.write_text(recipe.read_text() + "\n[fine.pach]\nimg_size = 48\n")
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "[fine.pach]: there is no group 'pach'; groups are patch" in result.stderr
    assert not (tmp_path / "run").exists()


def test_refusals_in_a_run_with_heads(mask_runs, tmp_path):
    cases = [(("fit-fine", mask_runs / "heads", "--group", "mask"),
              "head 'mask' has no specialist; add a [fine.mask] table"),
             (("fit-fine", mask_runs / "flat"), "has no groups")]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
    heads = {"heads": {"mask": 3, "gender": 2, "age": 3}}
    heads_only = mask_recipe(tmp_path / "plain.toml", mask_runs / "data" / "images", heads)
    assert cli("-q", "fit-coarse", heads_only, "--out", tmp_path / "plain", "--set", "coarse.epochs=1",
               "--fold", "0").exit_code == 0
    result = cli("fit-fine", tmp_path / "plain")
    assert result.exit_code == 2 and "no head has a specialist; add a [fine.<head>] table" in result.stderr
    bad = mask_recipe(tmp_path / "bad.toml", mask_runs / "data" / "images", heads, fine={"agee": {"img_size": 8}})
    result = cli("fit-coarse", bad, "--out", tmp_path / "bad")
    assert result.exit_code == 2
    assert "[fine.agee]: there is no head 'agee'; heads are mask, gender, age" in result.stderr
    assert not (tmp_path / "bad").exists()


def test_a_combiner_the_hierarchy_cannot_use_is_refused_before_the_run_folder(mask_runs, tmp_path):
    heads = {"heads": {"mask": 3, "gender": 2, "age": 3}}
    recipe = mask_recipe(tmp_path / "routed.toml", mask_runs / "data" / "images", heads)
    recipe.write_text(recipe.read_text() + '\n[combine]\nmethod = "routed"\n')
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and 'combine.method = "routed": routed needs groups' in result.stderr
    assert not (tmp_path / "run").exists()
    before = (mask_runs / "heads" / "recipe.toml").read_text()
    result = cli("fit-fine", mask_runs / "heads", "--set", "combine.method=blend")
    assert result.exit_code == 2 and "blend needs groups over a flat run" in result.stderr
    assert (mask_runs / "heads" / "recipe.toml").read_text() == before


def test_too_many_frozen_stages_are_refused_before_anything_is_written(detail_runs, tmp_path):
    result = cli("fit-coarse", detail_runs / "flat.toml", "--out", tmp_path / "run", "--set", "coarse.frozen_stages=5")
    assert result.exit_code == 2 and "coarse.frozen_stages = 5: test_resnet has 5 stages" in result.stderr
    assert not (tmp_path / "run").exists()
    # a specialist started from the coarse model is checked too, before its folder is written
    assert cli("-q", "fit-coarse", detail_runs / "linked.toml", "--out", tmp_path / "linked").exit_code == 0
    result = cli("fit-fine", tmp_path / "linked", "--set", "fine.frozen_stages=7")
    assert result.exit_code == 2 and "fine.patch.frozen_stages = 7" in result.stderr, result.output
    assert not list((tmp_path / "linked").glob("fine*"))


def test_a_device_the_machine_lacks_is_refused_before_anything_is_written(detail_runs, tmp_path, monkeypatch):
    """--set coarse.device=cuda on a machine without CUDA left folds.npz, hierarchy.json and
    recipe.toml behind."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli("fit-coarse", detail_runs / "flat.toml", "--out", tmp_path / "run", "--set", "coarse.device=cuda")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "coarse.device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')" in result.stderr
    assert not (tmp_path / "run").exists()
    result = cli("probe", detail_runs / "flat.toml", "--out", tmp_path / "probe", "--set", "coarse.device=cuda",
                 "--set", "coarse.pretrained=true")
    assert result.exit_code == 2 and not (tmp_path / "probe").exists(), result.output
    monkeypatch.setattr("hierclf.runtime.devices.cpu_has_bf16", lambda: False)
    result = cli("fit-coarse", detail_runs / "flat.toml", "--out", tmp_path / "run", "--set", "coarse.precision=bf16")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert 'coarse.precision = "bf16": this CPU has no bf16 units' in result.stderr
    assert not (tmp_path / "run").exists()
    recipe_before = (detail_runs / "hier" / "recipe.toml").read_text()
    result = cli("fit-fine", detail_runs / "hier", "--set", "fine.device=cuda")
    assert result.exit_code == 2 and "fine.patch.device = 'cuda' but no CUDA device" in result.stderr, result.output
    assert (detail_runs / "hier" / "recipe.toml").read_text() == recipe_before
