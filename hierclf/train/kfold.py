"""Leakage-safe folds: stratified by target, grouped so rows sharing a source (augmented copies
of one image, photos of one person, byte-identical copies) never sit on both sides of a split."""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from hierclf.data.duplicates import with_copies_together
from hierclf.data.items import Items
from hierclf.errors import DataError
from hierclf.recipe.schema import FoldsConfig
from hierclf.run.folder import TRAIN_ONLY

log = logging.getLogger(__name__)


def split_rows(items: Items, folds: FoldsConfig, where: str = "data") -> np.ndarray:
    """The validation fold of each of `items`' rows (`assign_folds`), byte-identical copies kept in
    one fold: what fit-coarse and the linear probe split a recipe's rows by."""
    items = with_copies_together(items, where)
    return assign_folds(items.labels, items.fold_groups, folds, items.class_names)


def assign_folds(targets: np.ndarray, groups: np.ndarray, folds: FoldsConfig,
                 class_names: tuple[str, ...]) -> np.ndarray:
    """The validation fold of each row, stratified by target and grouped (rows of one group never
    straddle a split); refused when the data is too small for the folds.

    Args:
        targets: each row's class.
        groups: each row's fold group (its own id when it has none).
        folds: the recipe's [folds].
        class_names: the classes, to name one that is too rare.

    Returns:
        Each row's fold; with folds.count = 1 the hold-out rows get fold 0, the rest TRAIN_ONLY."""
    splits = folds.count if folds.count > 1 else max(2, round(1 / folds.holdout))
    _check_enough(targets, groups, splits, folds, class_names)
    if len(np.unique(groups)) == len(groups):
        splitter = StratifiedKFold(n_splits=splits, shuffle=True, random_state=folds.seed)
        split_iter = splitter.split(np.zeros(len(targets)), targets)
    else:
        splitter = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=folds.seed)
        split_iter = splitter.split(np.zeros(len(targets)), targets, groups)
    fold_of_row = np.full(len(targets), TRAIN_ONLY, dtype=np.int64)
    for fold, (_, val_rows) in enumerate(split_iter):
        if folds.count == 1 and fold > 0:
            break
        fold_of_row[val_rows] = fold
    return fold_of_row


def _check_enough(targets: np.ndarray, groups: np.ndarray, splits: int, folds: FoldsConfig,
                  class_names: tuple[str, ...]) -> None:
    what = f"folds.count = {folds.count}" if folds.count > 1 else f"folds.holdout = {folds.holdout}"
    counts = Counter(targets.tolist())
    scarce = sorted((count, label) for label, count in counts.items() if count < splits)
    if scarce:
        count, label = scarce[0]
        raise DataError(f"{what} needs at least {splits} images of every class; class "
                        f"{class_names[label]!r} has {count}")
    group_count = len(np.unique(groups))
    if group_count < splits:
        raise DataError(f"{what} needs at least {splits} distinct groups; the data has {group_count}")
    if group_count < len(groups):
        _warn_of_grouped_classes(targets, groups, splits, what, class_names)


def _warn_of_grouped_classes(targets: np.ndarray, groups: np.ndarray, splits: int, what: str,
                             class_names: tuple[str, ...]) -> None:
    """A class whose rows all sit in fewer groups than there are folds cannot be in every fold's
    training and validation rows: some fold trains without it, or validates none of it. Said
    loudly, naming the class and its groups, as the data may still be what the user means."""
    for label in np.unique(targets):
        held_by = np.unique(groups[targets == label])
        if len(held_by) < splits:
            shown = ", ".join(repr(str(group)) for group in held_by[:3]) + (", …" if len(held_by) > 3 else "")
            log.warning("%s: every image of class %r is in %s group (%s), so some fold trains without it or "
                        "validates none of it; its out-of-fold score will mislead (check data.group_column)",
                        what, class_names[label], f"only {len(held_by)}" if len(held_by) > 1 else "one", shown)
