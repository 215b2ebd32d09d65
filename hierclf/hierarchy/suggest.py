"""Groups proposed from a flat run's out-of-fold confusion matrix: the classes it takes for each
other, which a specialist might tell apart."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class SuggestedGroup:
    members: tuple[int, ...]
    error_share: float
    """Share of all off-diagonal (error) counts that fall between members of the group."""
    confusion_rate: float
    """Mean symmetrised confusion rate between pairs of members."""


def confusion_affinity(matrix: np.ndarray) -> np.ndarray:
    """How often two classes are taken for each other: each row normalised by its class's count,
    the diagonal removed, then symmetrised."""
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    np.fill_diagonal(rates, 0.0)
    return (rates + rates.T) / 2


@dataclass(frozen=True)
class Suggestion:
    groups: list[SuggestedGroup]
    every_class_merged: bool = False
    """At the threshold, every class fell into one group (the flat problem again), so the groups
    are the next cut of the same tree instead."""


def suggest_groups(matrix: np.ndarray, max_groups: int = 3, min_confusion: float = 0.02) -> list[SuggestedGroup]:
    """Groups of classes a flat model confuses, the groups holding most of the errors first.

    Args:
        matrix: the out-of-fold confusion matrix (true class by row, predicted by column).
        max_groups: at most this many groups.
        min_confusion: the mean mutual confusion rate two classes need to share a group.

    Returns:
        `suggestion`'s groups (never one of every class)."""
    return suggestion(matrix, max_groups, min_confusion).groups


def suggestion(matrix: np.ndarray, max_groups: int = 3, min_confusion: float = 0.02) -> Suggestion:
    """Groups of classes a flat model confuses, the groups holding most of the errors first.

    Average-linkage agglomerative clustering (scikit-learn) on 1 − affinity merges classes while
    their mean mutual confusion rate is at least `min_confusion`; classes no other class is
    confused with stay alone, which a spectral partition into K clusters would not allow. A group
    of every class is never suggested: it is the flat problem again. Where the threshold merges
    every class, the tree is cut one merge lower (into two clusters), and that is said.

    Args:
        matrix: the out-of-fold confusion matrix (true class by row, predicted by column).
        max_groups: at most this many groups.
        min_confusion: the mean mutual confusion rate two classes need to share a group.

    Returns:
        The groups, each with its members (class indices), its share of the errors and its
        mean mutual confusion rate; whether the threshold had merged every class."""
    from sklearn.cluster import AgglomerativeClustering

    matrix = np.asarray(matrix, dtype=np.float64)
    affinity = confusion_affinity(matrix)
    if len(matrix) < 3 or affinity.max() < min_confusion:  # two classes: a group of both is the flat problem
        return Suggestion([])
    distance = 1.0 - affinity
    np.fill_diagonal(distance, 0.0)
    clusters = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                       distance_threshold=1.0 - min_confusion).fit_predict(distance)
    merged = len(np.unique(clusters)) == 1
    if merged:
        clusters = AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage="average").fit_predict(distance)
    errors = matrix.copy()
    np.fill_diagonal(errors, 0.0)
    total = max(errors.sum(), 1.0)
    found = []
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        if len(members) < 2:
            continue
        inside = errors[np.ix_(members, members)]
        pairs = affinity[np.ix_(members, members)][np.triu_indices(len(members), 1)]
        found.append(SuggestedGroup(members=tuple(int(m) for m in members), error_share=float(inside.sum() / total),
                                    confusion_rate=float(pairs.mean())))
    found.sort(key=lambda group: -group.error_share)
    return Suggestion(found[:max_groups], merged)


def attribute_values(class_names: Sequence[str]) -> list[list[str]] | None:
    """Each attribute's values, in order of appearance, when every class name is a combination
    of attributes' values joined by '/' (male/<30) and the classes are every such combination;
    None otherwise. Such labels fit one head per attribute better than groups."""
    split = [name.split("/") for name in class_names]
    width = len(split[0]) if split else 0
    if width < 2 or any(len(parts) != width for parts in split):
        return None
    values = [list(dict.fromkeys(parts[position] for parts in split)) for position in range(width)]
    combinations = {tuple(parts) for parts in split}
    if any(len(column) < 2 for column in values) or len(combinations) != len(split) \
            or len(split) != int(np.prod([len(column) for column in values])):
        return None
    return values
