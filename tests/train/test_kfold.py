"""Leakage-safe folds: stratified, grouped, and refused when too small."""
import numpy as np
import pytest

from hierclf.errors import DataError
from hierclf.recipe.schema import FoldsConfig
from hierclf.train.kfold import TRAIN_ONLY, assign_folds

NAMES = ("a", "b", "c")


def test_stratified_folds_cover_every_row_once():
    targets = np.repeat([0, 1, 2], [30, 20, 10])
    folds = assign_folds(targets, np.arange(60).astype(str), FoldsConfig(count=5, seed=3), NAMES)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    for fold in range(5):
        assert np.bincount(targets[folds == fold], minlength=3).tolist() == [6, 4, 2]
    again = assign_folds(targets, np.arange(60).astype(str), FoldsConfig(count=5, seed=3), NAMES)
    assert np.array_equal(folds, again)


def test_grouped_rows_never_straddle_folds():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"image-{i}" for i in range(40)], 7)  # 7 augmented copies of each original
    targets = np.repeat(rng.integers(0, 3, size=40), 7)
    folds = assign_folds(targets, groups, FoldsConfig(count=5), NAMES)
    for group in np.unique(groups):
        assert len(set(folds[groups == group])) == 1, group
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]


def test_single_fold_is_a_stratified_holdout():
    targets = np.repeat([0, 1], [80, 20])
    folds = assign_folds(targets, np.arange(100).astype(str), FoldsConfig(count=1, holdout=0.25), NAMES)
    assert set(folds) == {0, TRAIN_ONLY}
    assert np.bincount(targets[folds == 0]).tolist() == [20, 5]


def test_too_few_rows_or_groups_is_a_clear_error():
    targets = np.array([0] * 10 + [1] * 3)
    with pytest.raises(DataError, match="folds.count = 5 needs at least 5 images of every class; class 'b' has 3"):
        assign_folds(targets, np.arange(13).astype(str), FoldsConfig(count=5), NAMES)
    with pytest.raises(DataError, match="at least 5 distinct groups; the data has 2"):
        assign_folds(np.array([0, 1] * 10), np.array(["x", "y"] * 10), FoldsConfig(count=5), NAMES)


def test_a_class_held_by_fewer_groups_than_folds_is_named_loudly(caplog):
    import logging

    targets = np.repeat([0, 1, 2], 12)
    groups = np.asarray([f"g{row // 2}" for row in range(36)], dtype=object)
    groups[targets == 2] = "one-source"  # every image of class 2 from one source
    with caplog.at_level(logging.WARNING, logger="hierclf"):
        fold = assign_folds(targets, groups, FoldsConfig(count=3), ("a", "b", "c"))
    assert "every image of class 'c' is in one group ('one-source'), so some fold trains without it" in caplog.text
    assert "class 'a'" not in caplog.text
    assert len(np.unique(fold[targets == 2])) == 1  # what it warns of: one fold validates all of class c
