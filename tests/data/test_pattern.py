"""Labels from file names: `data.pattern` over small trees of files the tests write, and the mask
competition's folder as its preset."""
import logging
import math
import re

import numpy as np
import pytest
from PIL import Image

from conftest import write_mask_dataset
from hierclf.data import load_training_items
from hierclf.data.labels import Attribute
from hierclf.data.pattern import Pattern, bin_names, read_pattern_folder
from hierclf.data.sources import mask_attributes
from hierclf.errors import DataError, RecipeError
from hierclf.recipe.reading import recipe_from_dict
from hierclf.recipe.schema import DataConfig, FoldsConfig
from hierclf.train.kfold import assign_folds, split_rows

UTK = r"(?P<age>\d+)_(?P<gender>[01])_\d_\d+\.jpg\.chip\.jpg"
ADULTS = r"(?P<age>1[89]|[2-9]\d|\d{3})_(?P<gender>[01])_\d_\d+\.jpg\.chip\.jpg"
GENDERS = {"gender": {"0": "male", "1": "female"}}


def write_faces(root, ages=(5, 17, 18, 25, 29, 30, 45, 59, 60, 85), genders=(0, 1)):
    """UTKFace-style names, AGE_GENDER_RACE_DATE.jpg.chip.jpg, one image each."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for age in ages:
        for gender in genders:
            pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"{age}_{gender}_{age % 5}_2017{age:03d}{gender}.jpg.chip.jpg", "JPEG")
    return root


def test_attributes_from_names_mapped_and_binned(tmp_path):
    root = write_faces(tmp_path / "faces", ages=(18, 29, 30, 59, 60, 85))
    items = read_pattern_folder(root, Pattern(UTK, GENDERS, {"age": (30, 60)}))
    # no heads: the pattern's groups in order, age × gender, the bins' and the map's names
    assert items.class_names == ("<30/male", "<30/female", "30-59/male", "30-59/female", ">=60/male", ">=60/female")
    for image_id, label in zip(items.ids, items.labels):
        age, gender = int(image_id.split("_")[0]), int(image_id.split("_")[1])
        assert label == 2 * ((age >= 30) + (age >= 60)) + gender
    assert items.groups is None and items.paths[0].endswith(items.ids[0])


def test_heads_give_the_order_and_a_flat_recipe_may_name_its_classes(tmp_path):
    root = write_faces(tmp_path / "faces", ages=(18, 40, 70))
    heads = (Attribute("gender", ("male", "female")), Attribute("age", ("<30", "30-59", ">=60")))
    by_heads = read_pattern_folder(root, Pattern(UTK, GENDERS, {"age": (30, 60)}), heads)
    assert by_heads.class_names[:2] == ("male/<30", "male/30-59")
    names = ["male/<30", "male/30-59", "male/>=60", "female/<30", "female/30-59", "female/>=60"]
    flat = read_pattern_folder(root, Pattern(UTK, GENDERS, {"age": (30, 60)}), class_names=names)
    assert flat.class_names == tuple(names) and np.array_equal(flat.labels, by_heads.labels)
    with pytest.raises(RecipeError, match="names other classes than the joint ones of data.pattern's groups"):
        read_pattern_folder(root, Pattern(UTK, GENDERS, {"age": (30, 60)}), class_names=["male", "female"])


def test_unmatched_files_are_refused_or_skipped_and_counted(tmp_path, caplog):
    root = write_faces(tmp_path / "faces")  # ages 5 and 17 are children: ADULTS does not match them
    with pytest.raises(DataError, match=r"data.pattern: 4 of 20 images under .* do not match: 17_0_2_.*, 17_1_2_.*, "
                                        r"5_0_0_.* and 1 more \(data.pattern_unmatched = \"skip\""):
        read_pattern_folder(root, Pattern(ADULTS, GENDERS, {"age": (30, 60)}))
    with caplog.at_level(logging.WARNING, logger="hierclf"):
        adults = read_pattern_folder(root, Pattern(ADULTS, GENDERS, {"age": (30, 60)}, skip_unmatched=True))
    assert len(adults) == 16 and "4 of 20 images under" in caplog.text and "are left out" in caplog.text


def test_hidden_entries_are_not_rows(tmp_path):
    root = write_faces(tmp_path / "faces", ages=(20,))
    (root / ".ipynb_checkpoints").mkdir()
    write_faces(root / ".ipynb_checkpoints", ages=(21,))
    (root / "._20_0_0_2017020.jpg.chip.jpg").write_bytes(b"macOS metadata")
    assert len(read_pattern_folder(root, Pattern(UTK, GENDERS))) == 2


@pytest.mark.parametrize("pattern, heads, error, message", [
    (Pattern(UTK, GENDERS, {"age": (30, 60)}), [Attribute("gender", ("male", "female"))], RecipeError,
     "its group 'age' names no attribute"),
    (Pattern(r"\d+_(?P<gender>[01])_.*", GENDERS), [Attribute("gender", ("male", "female")),
                                                     Attribute("age", ("y", "o"))],
     RecipeError, "the head 'age' has no group in the pattern"),
    (Pattern(UTK, GENDERS, {"age": (30,)}), [Attribute("gender", ("male", "female")), Attribute("age", ("a", "b", "c"))],
     RecipeError, "pattern_bins.age cuts 2 bins, but the head 'age' has 3 values"),
    (Pattern(UTK, {"gender": {"0": "male"}}), [], DataError, "gender '1' is not one of male"),
    (Pattern(r"(?P<age>\d*)_(?P<gender>[01])_.*", GENDERS), [], "_0_0_2017.jpg.chip.jpg",
     "matched nothing for its group 'age'"),
    (Pattern(r"(?P<age>\w+?)_(?P<gender>[01])_.*", GENDERS, {"age": (30,)}), [], "x_0_0_2017.jpg.chip.jpg",
     "group 'age' matched 'x', not a finite decimal number to bin at"),
    # float() reads these as numbers; a file name's nan, inf or 1e400 is no age
    *[(Pattern(r"(?P<age>[\w.+-]+?)_(?P<gender>[01])_.*", GENDERS, {"age": (30,)}), [], f"{text}_0_0_2017.jpg.chip.jpg",
       f"group 'age' matched '{re.escape(text)}', not a finite decimal number") for text in ("nan", "inf", "-inf",
                                                                                            "Infinity", "1e400")],
    (Pattern(r"(?P<age>\d+", GENDERS), [], RecipeError, "is not a regular expression"),
    (Pattern(r"\d+_.*"), [], RecipeError, "no named group gives the label"),
])
def test_mistakes_end_in_one_line(tmp_path, pattern, heads, error, message):
    """`error` is the kind, or the name of one more file the case needs (a DataError then)."""
    root = write_faces(tmp_path / "faces", ages=(20, 40))
    if isinstance(error, str):
        (root / error).write_bytes(sorted(root.iterdir())[0].read_bytes())
        error = DataError
    with pytest.raises(error, match=message):
        read_pattern_folder(root, pattern, heads)


def test_a_label_group_and_a_person_group(tmp_path):
    """Oxford Pets' Breed_123.jpg: the label from the name; a person (or pet) group keeps its photos together."""
    rng = np.random.default_rng(1)
    for breed in ("Abyssinian", "Bengal", "beagle"):
        for pet in range(4):
            for shot in range(2):
                Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / f"{breed}_{pet}{shot}.png")
    items = read_pattern_folder(tmp_path, Pattern(r"(?P<label>[A-Za-z]+)_(?P<group>\d)\d\.png"))
    assert items.class_names == ("Abyssinian", "Bengal", "beagle") and np.bincount(items.labels).tolist() == [8, 8, 8]
    folds = split_rows(items, FoldsConfig(count=2))
    for breed, pet in {(i.split("_")[0], i.split("_")[1][0]) for i in items.ids}:
        rows = [row for row, i in enumerate(items.ids) if i.startswith(f"{breed}_{pet}")]
        assert len(set(folds[rows].tolist())) == 1  # groups are per name: pet 0 of every breed stays together


def test_the_mask_folder_is_a_preset_with_todays_rows_labels_and_folds(tmp_path):
    """The preset walks the person folders as the competition's reader did (each folder sorted), so
    rows, labels, person groups and folds are what they were."""
    images = write_mask_dataset(tmp_path, people_per_kind=3, size=16)
    items = load_training_items(DataConfig(mask_images=str(images)))
    expected_ids, expected_labels = [], []
    masks = {"incorrect_mask": 1, "normal": 2}
    for person in sorted(images.iterdir()):
        _, gender, _, years = person.name.split("_")
        for path in sorted(person.iterdir()):
            expected_ids.append(f"{person.name}/{path.name}")
            expected_labels.append(6 * masks.get(path.stem, 0) + 3 * ("male", "female").index(gender)
                                   + (int(years) >= 30) + (int(years) >= 60))
    assert items.ids.tolist() == expected_ids and items.labels.tolist() == expected_labels
    assert items.class_names[0] == "wear/male/<30" and mask_attributes((30, 60))[2].values == bin_names((30, 60))
    folds = assign_folds(items.labels, items.fold_groups, FoldsConfig(count=3), items.class_names)
    assert np.array_equal(folds, split_rows(items, FoldsConfig(count=3)))  # no copies: the same folds
    assert bin_names((0.5, 1)) == ("<0.5", "0.5-1", ">=1")


def test_a_recipe_reads_labels_from_names(tmp_path):
    root = write_faces(tmp_path / "faces")
    recipe = recipe_from_dict({"data": {"images": str(root), "pattern": ADULTS, "pattern_unmatched": "skip",
                                        "pattern_values": GENDERS, "pattern_bins": {"age": [30, 60]}},
                               "hierarchy": {"heads": {"gender": ["male", "female"], "age": ["<30", "30-59", ">=60"]}}})
    from hierclf.hierarchy.build import label_attributes
    items = load_training_items(recipe.data, label_attributes(recipe.hierarchy))
    assert len(items) == 16 and items.class_names[0] == "male/<30"
    for data, message in (({"pattern": ADULTS}, "data.pattern labels the images under data.images"),
                          ({"images": "x", "pattern": ADULTS, "pattern_bins": {"age": [60, 30]}}, "increasing bounds"),
                          *(({"images": "x", "pattern": ADULTS, "pattern_bins": {"age": bounds}}, "finite number")
                            for bounds in ([math.nan], [math.inf], [-math.inf, 40], [40, math.nan], [1e400])),
                          ({"csv": "a.csv", "pattern_values": GENDERS}, "apply to data.pattern, which is not set"),
                          ({"images": "x", "pattern": ADULTS, "csv": "a.csv"}, "data.csv and data.pattern are both set")):
        with pytest.raises(RecipeError, match=message):
            recipe_from_dict({"data": data})


def test_a_pattern_that_backtracks_without_end_names_itself_and_the_file(tmp_path):
    """(\\w+_?)+ before a literal backtracked in Python's re for about 35 minutes on one long name
    it almost matches: matched by the regex package, that name is one more unmatched file at once.
    A pattern that still backtracks there, (a|aa)+, is stopped within seconds, naming itself and
    the file."""
    import time

    for name in ("cat_1.png", "dog_2.png", "a_" * 20 + "x.png"):
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / name)
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"1 of 3 images under .* do not match: a_a_a_"):
        read_pattern_folder(tmp_path, Pattern(r"(?P<label>(\w+_?)+)_(?P<n>\d+)\.png"))
    assert time.perf_counter() - started < 5
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / ("a" * 40 + "b.png"))
    started = time.perf_counter()
    with pytest.raises(RecipeError, match=r"data.pattern = .*: matching 'aaaa.*.png' took over 1 s, "
                                          r"backtracking without end"):
        read_pattern_folder(tmp_path, Pattern(r"(?P<label>(a|aa)+|cat|dog)_?(?P<n>\d*)\.png"))
    assert time.perf_counter() - started < 30
