"""The run folder: started once, opened once, refused when it belongs to another recipe,
hierarchy or split."""
import numpy as np
import pytest

from hierclf.errors import RunError
from hierclf.hierarchy.groups import GroupHierarchy
from hierclf.recipe.reading import recipe_from_dict
from hierclf.run.folder import Folds, Run, config_differences

CLASSES = ("a", "b", "c")
FOLDS = Folds(ids=np.array(["x", "y", "z"]), labels=np.array([0, 1, 2]), fold=np.array([0, 1, 0]))


def start(root, recipe=None, hierarchy=None, folds=FOLDS):
    recipe = recipe or recipe_from_dict({"data": {"csv": "/d/train.csv"}})
    return Run.start(root, recipe, hierarchy or GroupHierarchy(CLASSES), folds)


def test_a_run_is_written_once_and_opened_with_its_recipe_hierarchy_and_folds(tmp_path):
    run = start(tmp_path / "run")
    assert sorted(p.name for p in run.root.iterdir()) == ["folds.npz", "hierarchy.json", "recipe.toml"]
    opened = Run.open(tmp_path / "run")
    assert opened.recipe == run.recipe and opened.hierarchy == run.hierarchy
    assert opened.folds.matches(FOLDS) and opened.coarse_stage.name == "coarse" and opened.specialist_stages == {}
    start(tmp_path / "run")  # the same recipe, hierarchy and folds: fine
    assert opened.fold_dir("fine/g", 2) == tmp_path / "run" / "fine" / "g" / "fold-2"


def test_a_run_folder_of_another_recipe_hierarchy_data_or_split_is_refused(tmp_path):
    start(tmp_path / "run")
    other_recipe = recipe_from_dict({"data": {"csv": "/d/train.csv"}, "coarse": {"epochs": 2}})
    cases = [(dict(recipe=other_recipe), "made with another recipe (coarse.epochs: 10 → 2)"),
             (dict(hierarchy=GroupHierarchy(("a", "b", "x"))), "made for another hierarchy"),
             (dict(folds=Folds(FOLDS.ids, np.array([0, 1, 1]), FOLDS.fold)), "the training data changed"),
             (dict(folds=Folds(FOLDS.ids, FOLDS.labels, np.array([1, 0, 0]))), "split into other folds")]
    for changes, message in cases:
        with pytest.raises(RunError, match=message.replace("(", r"\(").replace(")", r"\)")):
            start(tmp_path / "run", **changes)
    runtime = recipe_from_dict({"data": {"csv": "/d/train.csv"}, "coarse": {"workers": 7}})
    assert start(tmp_path / "run", recipe=runtime).recipe.coarse.workers == 7  # runtime keys may change


def test_what_is_not_a_run_folder(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="exists and is not a hierclf run folder"):
        start(tmp_path / "stuff")
    with pytest.raises(RunError, match="is not a hierclf run folder \\(no recipe.toml\\)"):
        Run.open(tmp_path / "stuff")
    run = Run(root=tmp_path / "bare", recipe=recipe_from_dict({}), hierarchy=GroupHierarchy(CLASSES))
    with pytest.raises(RunError, match="has no folds.npz; run `hierclf fit-coarse` first"):
        run.folds


def test_a_stage_folder_keeps_the_keys_it_was_trained_with(tmp_path):
    hierarchy = GroupHierarchy.from_config([["a", "b"]], ["ab"], CLASSES)
    recipe = recipe_from_dict({"data": {"csv": "/d/train.csv"}, "fine": {"epochs": 3}})
    run = start(tmp_path / "run", recipe=recipe, hierarchy=hierarchy)
    stage = run.specialist_stages["ab"]
    run.bind_stage(stage)
    run.check_stage(stage)
    changed = hierarchy.specialist_stage(hierarchy.group("ab"), recipe.with_seed(5))
    with pytest.raises(RunError, match=r"was trained with other keys \(fine.ab.seed: 0 → 5\)"):
        run.check_stage(changed)
    assert config_differences(recipe.coarse, recipe.fine, "fine") == ["fine.epochs: 10 → 3"]


def test_a_flat_run_as_coarse_stage_is_read_where_it_lies_and_checked(detail_runs):
    linked, flat = Run.open(detail_runs / "linked"), Run.open(detail_runs / "flat")
    assert linked.coarse_source.root == flat.root and linked.hierarchy.flat_coarse
    assert linked.stage_dir("coarse") == flat.stage_dir("coarse") and not (linked.root / "coarse").exists()
    assert linked.oof_path("coarse") == flat.oof_path("coarse")
    assert linked.coarse_stage.layout.output_names == flat.hierarchy.class_names


def test_a_flat_coarse_run_of_other_folds_classes_or_coarse_keys_is_refused(detail_runs, tmp_path):
    from conftest import cli

    recipe = (detail_runs / "linked.toml").read_text()
    cases = {"folds": (recipe.replace("seed = 0", "seed = 3", 1), "that run was split into other folds"),
             "coarse": (recipe.replace("epochs = 10", "epochs = 9", 1),
                        "[coarse] must be that run's, as it is that run's models (coarse.epochs: 10 → 9)"),
             "hier": (recipe.replace(str(detail_runs / "flat"), str(detail_runs / "hier")),
                      "that run has groups patch; the coarse stage must be a flat run"),
             "missing": (recipe.replace(str(detail_runs / "flat"), str(tmp_path / "nothing")),
                         "is not a hierclf run folder")}
    for name, (text, message) in cases.items():
        assert text != recipe, name
        (tmp_path / f"{name}.toml").write_text(text)
        result = cli("fit-coarse", tmp_path / f"{name}.toml", "--out", tmp_path / name)
        assert result.exit_code == 2 and message in result.stderr, (name, result.output)
        assert "hierarchy.coarse_run = " in result.stderr
        assert not (tmp_path / name).exists(), name  # every check before the folder is made


def test_a_flat_coarse_run_changed_after_the_fact_is_refused_when_opened(detail_runs, tmp_path):
    import shutil

    shutil.copytree(detail_runs / "linked", tmp_path / "linked")
    saved = np.load(tmp_path / "linked" / "folds.npz")
    np.savez(tmp_path / "linked" / "folds.npz", ids=saved["ids"], labels=saved["labels"], fold=saved["fold"][::-1])
    with pytest.raises(RunError, match="that run was split into other folds"):
        Run.open(tmp_path / "linked").stage_dir("coarse")


def test_a_recipe_edited_to_another_hierarchy_is_refused(detail_runs, tmp_path):
    import shutil

    from conftest import cli

    shutil.copytree(detail_runs / "hier", tmp_path / "hier")
    recipe = tmp_path / "hier" / "recipe.toml"
    text = recipe.read_text()
    recipe.write_text(text.replace('group_names = [\n    "patch",\n]', 'group_names = [\n    "other",\n]'))
    result = cli("fit-fine", tmp_path / "hier")
    assert result.exit_code == 2, result.output
    assert "recipe.toml's [hierarchy] (groups other) is not the hierarchy this run was made for " \
           "(hierarchy.json: groups patch)" in result.stderr
    recipe.write_text(recipe.read_text().replace('"checked"', '"nowhere"'))
    result = cli("predict", tmp_path / "hier", detail_runs / "data" / "train.csv", "--out", tmp_path / "p.csv")
    assert result.exit_code == 2 and "unknown class 'nowhere'" in result.stderr
    assert not (tmp_path / "p.csv").exists()


def test_a_stray_temporary_file_neither_decides_what_a_folder_is_nor_stays(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "run").mkdir()
    from hierclf.run.files import HOST

    stray = tmp_path / "run" / f".recipe.toml.{HOST}-{dead}.0123abcd.tmp"
    stray.write_text("half")
    start(tmp_path / "run")  # the folder holds nothing but a killed writer's leftover: a new run may start there
    assert not stray.exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["folds.npz", "hierarchy.json", "recipe.toml"]


def test_a_run_killed_after_its_first_write_resumes_with_the_same_command(tmp_path):
    """The folder holds only recipe.toml (killed before hierarchy.json), or only the probe file
    check_writable makes: the same command starts again there; another recipe is still refused."""
    import os
    import subprocess
    import sys

    from hierclf.run.files import HOST

    first = start(tmp_path / "run")
    for name in ("hierarchy.json", "folds.npz"):
        (first.root / name).unlink()
    other = recipe_from_dict({"data": {"csv": "/d/train.csv"}, "coarse": {"epochs": 2}})
    with pytest.raises(RunError, match="made with another recipe"):
        start(tmp_path / "run", recipe=other)
    run = start(tmp_path / "run")
    assert sorted(p.name for p in run.root.iterdir()) == ["folds.npz", "hierarchy.json", "recipe.toml"]
    (run.root / "hierarchy.json").unlink()
    (run.root / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="holds a recipe.toml but no hierarchy.json, and other files"):
        start(tmp_path / "run")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "probed").mkdir()
    from hierclf.run.files import check_writable

    check_writable(tmp_path / "probed", "--out", folder=True)
    assert list((tmp_path / "probed").iterdir()) == []
    left = tmp_path / "probed" / f".hierclf-probe.{HOST}-{dead}.0123abcd.tmp"  # as a kill between its two steps
    left.write_text("")
    start(tmp_path / "probed")
    assert not left.exists() and os.path.exists(tmp_path / "probed" / "folds.npz")
