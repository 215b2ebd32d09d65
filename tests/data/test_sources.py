"""Sources: a CSV and its image folder, a class-per-folder tree, a folder of images, the mask
competition's folder of people; every mistake named with its file and row."""
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, write_csv_dataset, write_mask_dataset, write_tree_dataset
from hierclf.data import load_input_items, load_training_items
from hierclf.data.items import UNKNOWN_LABEL
from hierclf.data.labels import Attribute, decode_factors
from hierclf.data.sources import mask_attributes
from hierclf.errors import DataError, RecipeError
from hierclf.recipe.schema import DataConfig, FoldsConfig
from hierclf.train.kfold import assign_folds


def attributes(**values) -> tuple[Attribute, ...]:
    """Attributes as a recipe's heads give them: a size (values 0, 1, …) or the value names."""
    return tuple(Attribute(name, tuple(str(v) for v in range(spec)) if isinstance(spec, int) else tuple(spec))
                 for name, spec in values.items())


def rewrite_csv(path, rows):
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_csv_source_with_names_groups_and_default_image_folder(tmp_path):
    train_csv = write_csv_dataset(tmp_path, per_class=4, groups_of=2)
    items = load_training_items(DataConfig(csv=str(train_csv)))
    assert items.class_names == tuple(sorted(CLASSES))
    assert len(items) == 12 and items.has_labels
    assert items.paths[0].endswith("train/left-000.png")  # id without extension, folder train/ beside train.csv
    assert items.groups is not None and len(set(items.groups)) == 6
    first = items.image(0, 3)
    assert first.shape == (16, 16, 3) and first.dtype == np.uint8


def test_csv_integer_labels_custom_columns_and_explicit_names(tmp_path):
    write_csv_dataset(tmp_path, per_class=2, label_as_name=False)
    rows = list(csv.reader((tmp_path / "train.csv").open()))
    rewrite_csv(tmp_path / "meta.csv", [["ID", "target"]] + [[f"{r[0]}.png", r[1]] for r in rows[1:]])
    items = load_training_items(DataConfig(csv=str(tmp_path / "meta.csv"), images=str(tmp_path / "train"),
                                           id_column="ID", label_column="target"))
    assert items.class_names == ("0", "1", "2") and sorted(set(items.labels)) == [0, 1, 2]
    named = load_training_items(DataConfig(csv=str(tmp_path / "meta.csv"), images=str(tmp_path / "train"),
                                           id_column="ID", label_column="target", class_names=CLASSES))
    assert named.class_names == CLASSES and np.array_equal(named.labels, items.labels)


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [["name", "label"]] + rows[1:], "no column 'id'; columns are name, label"),
    (lambda rows: rows + [["ghost", "left"]], "no image in .* for id 'ghost'"),
    (lambda rows: rows + [["left-000", "left"]], r"line 8: id 'left-000' appears again \(first on line 2\)"),
    (lambda rows: rows[:1] + [[rows[1][0], "nine"]] + rows[2:], "label 'nine' is not a class"),
    (lambda rows: rows[:1] + [[rows[1][0], ""]] + rows[2:], "train.csv, line 2: image 'left-000' has no label$"),
])
def test_csv_errors_name_the_culprit(tmp_path, edit, message):
    train_csv = write_csv_dataset(tmp_path, per_class=2)
    rewrite_csv(train_csv, edit(list(csv.reader(train_csv.open()))))
    config = DataConfig(csv=str(train_csv),
                        class_names=CLASSES if "not a class" in message else ())
    with pytest.raises(DataError, match=message):
        load_training_items(config)


def test_label_index_out_of_range(tmp_path):
    train_csv = write_csv_dataset(tmp_path, per_class=2, label_as_name=False)
    rows = list(csv.reader(train_csv.open()))
    rows[1][1] = "7"
    rewrite_csv(train_csv, rows)
    with pytest.raises(DataError, match=r"line 2: label '7' is not a class.*index 0..2"):
        load_training_items(DataConfig(csv=str(train_csv), class_names=CLASSES))


def test_class_tree_and_prediction_inputs(tmp_path):
    tree = write_tree_dataset(tmp_path / "tree", per_class=3)
    items = load_training_items(DataConfig(folder=str(tree)))
    assert items.class_names == ("left", "middle", "right")
    assert items.ids[0] == "left/000.png" and list(items.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # a tree as prediction input keeps its labels, in the run's class order
    again = load_input_items(tree, class_names=("right", "middle", "left"))
    assert list(again.labels[:3]) == [2, 2, 2]
    with pytest.raises(DataError, match="'left' is not a class of this run"):
        load_input_items(tree, class_names=("a", "b"))
    # a flat folder of images is unlabelled, ids are file names
    flat = load_input_items(tree / "middle", class_names=CLASSES)
    assert list(flat.ids) == ["000.png", "001.png", "002.png"] and (flat.labels == UNKNOWN_LABEL).all()
    # a CSV without a label column is unlabelled too
    rewrite_csv(tmp_path / "test.csv", [["id"], ["000"], ["001"]])
    unlabeled = load_input_items(tmp_path / "test.csv", class_names=CLASSES, images=tree / "left")
    assert not unlabeled.has_labels and len(unlabeled) == 2


def test_mask_folder_rows_attributes_and_person_groups(tmp_path):
    images = write_mask_dataset(tmp_path, people_per_kind=3, size=16)
    first = sorted(images.iterdir())[0]
    (first / "._mask1.png").write_bytes(b"macOS metadata, not an image")  # skipped, as the real data has them
    items = load_training_items(DataConfig(mask_images=str(images)))
    assert len(items) == 18 * 7
    assert items.class_names[0] == "wear/male/<30" and items.class_names[17] == "not_wear/female/>=60"
    values = decode_factors(items.labels, [a.size for a in mask_attributes((30, 60))])
    assert np.array_equal(items.labels, values @ np.array([6, 3, 1]))  # mask·6 + gender·3 + age
    for image_id, (mask, gender, age), group in zip(items.ids, values, items.groups):
        folder, name = image_id.split("/")
        person, gender_name, _, years = folder.split("_")
        assert group == person
        assert mask == (0 if name.startswith("mask") else 1 if name.startswith("incorrect") else 2)
        assert gender == ("male", "female").index(gender_name)
        assert age == (int(years) >= 30) + (int(years) >= 60)
    # the person id is the fold group: one person's seven photos never straddle a split
    fold_of_row = assign_folds(items.labels, items.fold_groups, FoldsConfig(count=3), items.class_names)
    for person in np.unique(items.groups):
        assert len(np.unique(fold_of_row[items.groups == person])) == 1


def test_mask_folder_follows_the_recipes_head_order_and_age_bounds(tmp_path):
    images = write_mask_dataset(tmp_path, people_per_kind=1, size=16)
    items = load_training_items(DataConfig(mask_images=str(images), age_bounds=(25, 60)),
                                attributes(age=3, mask=3, gender=2))
    for person in images.iterdir():
        gender, years = ("male", "female").index(person.name.split("_")[1]), int(person.name.split("_")[3])
        age = (years >= 25) + (years >= 60)
        row = list(items.ids).index(f"{person.name}/normal.png")
        assert items.labels[row] == age * 6 + 2 * 2 + gender  # age, mask (not_wear = 2), gender: the recipe's order
    assert items.class_names == tuple(str(i) for i in range(18))


def _bad_person_folder(root):
    (root / "images" / "000099_Asian_20").mkdir()
    Image.new("RGB", (4, 4)).save(root / "images" / "000099_Asian_20" / "normal.png")


@pytest.mark.parametrize("make, message", [
    (_bad_person_folder, r"1 of 43 images under .* do not match \(expected <person-id>_<gender>_<race>_<age>/"
                         r"\{mask1..mask5,incorrect_mask,normal\}.<ext>, .*\): 000099_Asian_20/normal.png"),
    (lambda root: Image.new("RGB", (4, 4)).save(sorted((root / "images").iterdir())[0] / "mask9.png"),
     r"do not match \(expected .*\): 000001_male_Asian_\d+/mask9.png"),
    (lambda root: Image.new("RGB", (4, 4)).save(root / "images" / "000099_other_Asian_20" / "normal.png")
     if (root / "images" / "000099_other_Asian_20").mkdir() is None else None, "gender 'other' is not one of male, "
                                                                                "female"),
])
def test_mask_folder_refusals(tmp_path, make, message):
    write_mask_dataset(tmp_path, people_per_kind=1, size=16)
    make(tmp_path)
    with pytest.raises(DataError, match=message):
        load_training_items(DataConfig(mask_images=str(tmp_path / "images")))
    with pytest.raises(RecipeError, match=r"data.mask_images gives heads mask \(3\), gender \(2\), age \(3\)"):
        load_training_items(DataConfig(mask_images=str(tmp_path / "images")), attributes(mask=3, age=2))


def test_csv_with_one_column_per_attribute(tmp_path):
    (tmp_path / "train").mkdir()
    rows = [["id", "mask", "gender"]]
    for index, (mask, gender) in enumerate([("wear", "0"), ("none", "1"), ("none", "0"), ("wear", "1")]):
        Image.new("L", (8, 8)).save(tmp_path / "train" / f"{index}.png")
        rows.append([str(index), mask, gender])
    rewrite_csv(tmp_path / "train.csv", rows)
    heads = attributes(mask=("wear", "none"), gender=2)
    items = load_training_items(DataConfig(csv=str(tmp_path / "train.csv")), heads)
    assert items.labels.tolist() == [0, 3, 2, 1] and items.class_names == ("wear/0", "wear/1", "none/0", "none/1")
    rows[2][1] = "maybe"
    rewrite_csv(tmp_path / "train.csv", rows)
    with pytest.raises(DataError, match="column 'mask', line 3: label 'maybe' is not a class"):
        load_training_items(DataConfig(csv=str(tmp_path / "train.csv")), heads)


def test_an_input_csv_may_give_one_column_per_head(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "images" / "0.png")
    rewrite_csv(tmp_path / "input.csv", [["id", "mask", "gender"], ["0", "none", "1"]])
    heads = attributes(mask=("wear", "none"), gender=2)
    names = ("wear/0", "wear/1", "none/0", "none/1")
    items = load_input_items(tmp_path / "input.csv", names, images=tmp_path / "images", attributes=heads)
    assert items.labels.tolist() == [3] and items.has_labels
    plain = load_input_items(tmp_path / "input.csv", names, images=tmp_path / "images")
    assert not plain.has_labels  # without heads, the columns mean nothing


@pytest.mark.parametrize("labels, message", [
    ({2: "-1"}, r"line 2: label '-1' is negative; integer labels are class indices"),
    ({2: "7", 3: "7"}, r"classes '3', '4', '5', '6' have no image; every class needs training rows"),
])
def test_integer_labels_that_are_negative_or_skip_classes_are_refused(tmp_path, labels, message):
    train_csv = write_csv_dataset(tmp_path, per_class=3, label_as_name=False)
    rows = list(csv.reader(train_csv.open()))
    for line, value in labels.items():
        rows[line - 1][1] = value
    rewrite_csv(train_csv, rows)
    with pytest.raises(DataError, match=message):
        load_training_items(DataConfig(csv=str(train_csv)))


def test_a_class_named_but_without_images_is_refused(tmp_path):
    train_csv = write_csv_dataset(tmp_path, per_class=2)
    with pytest.raises(DataError, match="class 'up' has no image"):
        load_training_items(DataConfig(csv=str(train_csv), class_names=(*CLASSES, "up")))


def test_ids_are_kept_exactly_as_written(tmp_path):
    train_csv = write_csv_dataset(tmp_path, per_class=2)
    (tmp_path / "train" / "left-000.png").rename(tmp_path / "train" / " left-000.png")
    rows = list(csv.reader(train_csv.open()))
    rows[1][0] = " left-000"
    rewrite_csv(train_csv, rows)
    items = load_training_items(DataConfig(csv=str(train_csv)))
    assert items.ids[0] == " left-000" and items.paths[0].endswith("/ left-000.png")


def test_an_empty_joint_class_of_attribute_heads_is_named(tmp_path, caplog):
    import logging

    train_csv = write_csv_dataset(tmp_path, per_class=2, label_as_name=False)  # labels 0..2 of 4 joint classes
    heads = attributes(a=2, b=2)
    with caplog.at_level(logging.WARNING, logger="hierclf"):
        items = load_training_items(DataConfig(csv=str(train_csv)), heads)
    assert len(items.class_names) == 4
    assert "joint class '3' has no training row; the heads' product can still predict it" in caplog.text


def test_ids_that_leave_the_image_folder_are_refused_naming_the_line(tmp_path):
    train_csv = write_csv_dataset(tmp_path / "data", per_class=4)
    secret = tmp_path / "secret"
    secret.mkdir()
    (tmp_path / "data" / "train" / "left-000.png").rename(secret / "x.png")
    (tmp_path / "data" / "train" / "sub").mkdir()
    (tmp_path / "data" / "train" / "left-001.png").rename(tmp_path / "data" / "train" / "sub" / "y.png")
    rows = list(csv.reader(train_csv.open()))
    rows[2][0] = "sub/../sub/y.png"  # climbs, but stays inside: read
    for image_id in ("../../secret/x.png", str(secret / "x.png"), "sub/../../../secret/x.png"):
        rows[1][0] = image_id
        rewrite_csv(train_csv, rows)
        with pytest.raises(DataError, match=r"train.csv, line 2: id .* points outside the image folder"):
            load_training_items(DataConfig(csv=str(train_csv)))
        with pytest.raises(DataError, match="line 2: id"):
            load_input_items(train_csv, sorted(CLASSES))
        allowed = load_training_items(DataConfig(csv=str(train_csv), ids_outside=True))
        assert Path(allowed.paths[0]).resolve() == (secret / "x.png").resolve()
        assert load_input_items(train_csv, sorted(CLASSES), outside_allowed=True).ids[0] == image_id


def test_hidden_entries_are_neither_classes_nor_images_and_are_counted(tmp_path, caplog):
    """.ipynb_checkpoints beside the classes and inside one, macOS's ._ files and __MACOSX, a
    .DS_Store: left out of training and prediction inputs alike, with one warning each."""
    import logging
    import shutil

    tree = write_tree_dataset(tmp_path / "tree", per_class=3)
    shutil.copytree(tree / "left", tree / ".ipynb_checkpoints")
    shutil.copytree(tree / "middle", tree / "middle" / ".ipynb_checkpoints")
    shutil.copytree(tree / "right", tree / "__MACOSX")
    shutil.copy(tree / "left" / "000.png", tree / "left" / "._000.png")
    (tree / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with caplog.at_level(logging.WARNING):
        items = load_training_items(DataConfig(folder=str(tree)))
    assert items.class_names == ("left", "middle", "right") and len(items) == 9
    assert list(items.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert "3 hidden entries left out (.DS_Store, .ipynb_checkpoints, __MACOSX)" in caplog.text
    assert "left: 1 hidden entry left out (._000.png)" in caplog.text
    again = load_input_items(tree, class_names=CLASSES)
    assert len(again) == 9
    flat = load_input_items(tree / "left", class_names=CLASSES)
    assert list(flat.ids) == ["000.png", "001.png", "002.png"]


def test_an_id_that_two_image_files_could_be_is_refused_naming_both(tmp_path):
    train_csv = write_csv_dataset(tmp_path, per_class=2)
    image = tmp_path / "train" / "left-001.png"
    Image.open(image).convert("RGB").save(image.with_suffix(".jpg"))
    with pytest.raises(DataError, match=r"train.csv, line 3: id 'left-001' could be any of left-001.jpg and "
                                        r"left-001.png in .*; write the id with its extension"):
        load_training_items(DataConfig(csv=str(train_csv)))
    rows = list(csv.reader(train_csv.open()))
    rows[2][0] = "left-001.png"
    rewrite_csv(train_csv, rows)
    assert load_training_items(DataConfig(csv=str(train_csv))).paths[1].endswith("left-001.png")
