"""Byte-identical images are one photo: kept in one fold, and named when their labels differ."""
import logging

import numpy as np
from PIL import Image

from hierclf.data.duplicates import copies_of, with_copies_together
from hierclf.data.items import Items
from hierclf.recipe.schema import FoldsConfig
from hierclf.train.kfold import split_rows


def write_rows(root, copies=((0, 0), (9, 0))):
    """Twelve distinct noise images of classes a, b (row % 2), then the copies asked for (of row, label)."""
    root.mkdir()
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for row in range(12):
        path = root / f"{row:02d}.png"
        Image.fromarray(rng.integers(0, 255, (6, 6), dtype=np.uint8)).save(path)
        paths.append(str(path))
        labels.append(row % 2)
    for copy, (of, label) in enumerate(copies):
        path = root / f"copy{copy}.png"
        path.write_bytes((root / f"{of:02d}.png").read_bytes())
        paths.append(str(path))
        labels.append(label)
    return Items(ids=np.asarray([p.rsplit("/", 1)[1] for p in paths]), labels=np.asarray(labels),
                 class_names=("a", "b"), paths=np.asarray(paths))


def test_copies_share_a_fold_and_conflicting_labels_are_named(tmp_path, caplog):
    items = write_rows(tmp_path / "images")  # copy0 repeats row 0 with its label; copy1 repeats row 9 as 'a'
    assert [rows.tolist() for rows in copies_of(items)] == [[0, 12], [9, 13]]
    with caplog.at_level(logging.WARNING, logger="hierclf"):
        together = with_copies_together(items, "train.csv")
    assert "train.csv: 2 images are byte-identical copies of another (2 sets)" in caplog.text
    assert "1 sets carry different labels: 09.png (b) = copy1.png (a)" in caplog.text
    assert together.groups[0] == together.groups[12] and together.groups[9] == together.groups[13]
    assert len(set(together.groups.tolist())) == 12
    folds = split_rows(items, FoldsConfig(count=3))
    assert folds[0] == folds[12] and folds[9] == folds[13]


def test_copies_join_the_groups_they_have_and_no_copies_change_nothing(tmp_path):
    items = write_rows(tmp_path / "images", copies=((0, 0),))
    groups = np.asarray(["p0", "p0", "p1", "p1"] + [f"p{row}" for row in range(2, 10)] + ["p5"])
    grouped = with_copies_together(Items(ids=items.ids, labels=items.labels, class_names=items.class_names,
                                         paths=items.paths, groups=groups))
    # row 0 (person p0, with row 1) and its copy (person p5, with row 7) are one group now
    assert len({grouped.groups[row] for row in (0, 1, 7, 12)}) == 1 and grouped.groups[2] != grouped.groups[0]
    plain = write_rows(tmp_path / "plain", copies=())
    assert with_copies_together(plain) is plain
    arrays = Items.from_arrays(np.stack([np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8),
                                         np.zeros((4, 4), np.uint8)]), [0, 1, 0])
    assert [rows.tolist() for rows in copies_of(arrays)] == [[0, 2]]  # in memory: equal pixels
