"""Offline augmentation: copies that keep their original's group, so folds stay leak-free."""
import csv

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_csv_dataset, write_recipe
from hierclf.cli import main
from hierclf.data import load_training_items
from hierclf.data.images import decode_image
from hierclf.data.offline import choose_classes
from hierclf.errors import HierclfError
from hierclf.recipe.reading import load_recipe
from hierclf.train.kfold import assign_folds


def test_classes_are_chosen_by_name_or_index():
    assert choose_classes("b,0", ("a", "b", "c")) == [0, 1] and choose_classes(None, ("a", "b")) == [0, 1]
    with pytest.raises(HierclfError, match="'z' is neither a class name nor an index 0..1"):
        choose_classes("z", ("a", "b"))


def test_augmented_copies_never_straddle_folds(tmp_path):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=10, groups_of=2)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(train_csv)}, coarse={"augment": "light"})
    out = tmp_path / "augmented"
    runner = CliRunner()
    result = runner.invoke(main, ["augment", str(recipe), "--out", str(out), "--copies", "3", "--classes",
                                  "left,2"])
    assert result.exit_code == 0, result.output
    assert "wrote 30 originals and 60 augmented copies (2 classes)" in result.stdout
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert len(rows) == 90 and {row["label"] for row in rows if "__aug" in row["id"]} == {"left", "right"}
    original_group = {row["id"]: row["group"] for row in rows if "__aug" not in row["id"]}
    changed = []
    for row in rows:
        if "__aug" in row["id"]:
            source = row["id"].split("__aug")[0] + ".png"
            assert row["group"] == original_group[source]  # a copy carries its original's group
            changed.append(not np.array_equal(decode_image(out / "train" / row["id"], 1),
                                              decode_image(out / "train" / source, 1)))
    assert np.mean(changed) > 0.7  # light applies each transform with p < 1: a few copies stay as they were
    items = load_training_items(load_recipe(recipe, [f"data.csv={out / 'train.csv'}"]).data)
    fold = assign_folds(items.labels, items.fold_groups, load_recipe(recipe).folds, items.class_names)
    for group in set(items.fold_groups):
        assert len(set(fold[items.fold_groups == group])) == 1, group
    for args, message in [(["--classes", "sideways"], "--classes: 'sideways' is neither a class name"),
                          ([], f"--out {out} already exists")]:
        target = out if not args else tmp_path / "other"
        bad = runner.invoke(main, ["augment", str(recipe), "--out", str(target), "--copies", "1", *args])
        assert bad.exit_code == 2 and message in bad.stderr, bad.output
        assert not (tmp_path / "other").exists()
    plain = write_recipe(tmp_path / "plain.toml", {"csv": str(train_csv)})
    bad = runner.invoke(main, ["augment", str(plain), "--out", str(tmp_path / "other"), "--copies", "1"])
    assert bad.exit_code == 2 and "coarse.augment is \"none\"" in bad.stderr
