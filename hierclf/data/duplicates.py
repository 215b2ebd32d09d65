"""Byte-identical images: one photo stored twice is one photo. A copy on each side of a split is a
leak (the model is scored on a row it trained on), so copies share a fold group; copies that
carry different labels are named, for the user to fix or drop."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np

from hierclf.data.items import Items

log = logging.getLogger(__name__)


def copies_of(items: Items) -> list[np.ndarray]:
    """The sets of rows whose images are byte-identical (files), or equal in pixels (arrays): each
    set's rows in order, two or more to a set."""
    by_digest: dict[str, list[int]] = {}
    for row in range(len(items)):
        content = Path(items.paths[row]).read_bytes() if items.paths is not None else items.images[row].tobytes()
        by_digest.setdefault(hashlib.sha1(content).hexdigest(), []).append(row)
    return [np.asarray(rows) for rows in by_digest.values() if len(rows) > 1]


def with_copies_together(items: Items, where: str = "data") -> Items:
    """`items` with every set of copies in one fold group (joined with the groups they already
    have: a person's photos and their copies stay together), and one warning line saying how many
    there are and which carry different labels."""
    sets = copies_of(items)
    if not sets:
        return items
    groups = [str(group) for group in items.fold_groups]
    parent = {group: group for group in groups}

    def root(group: str) -> str:
        while parent[group] != group:
            parent[group] = parent[parent[group]]
            group = parent[group]
        return group

    for rows in sets:
        first = root(groups[rows[0]])
        for row in rows[1:]:
            parent[root(groups[row])] = first
    conflicting = [rows for rows in sets if len(set(items.labels[rows].tolist())) > 1]
    shown = "; ".join(" = ".join(f"{items.ids[row]} ({items.class_names[items.labels[row]]})" for row in rows[:2])
                      for rows in conflicting[:3])
    log.warning("%s: %d images are byte-identical copies of another (%d sets); each set is kept in one fold%s",
                where, sum(len(rows) - 1 for rows in sets), len(sets),
                f", and {len(conflicting)} sets carry different labels: {shown}{', …' if len(conflicting) > 3 else ''}"
                f" (fix or drop them)" if conflicting else "")
    return dataclasses.replace(items, groups=np.asarray([root(group) for group in groups]))
