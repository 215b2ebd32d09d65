"""Labels that are combinations of attributes (mask × gender × age): the joint label is the
mixed-radix number of the attribute values, first attribute most significant. Sources read
labels given this way (one CSV column per attribute, the mask competition's folder names); the
hierarchy built on them (`hierclf.hierarchy.factors`) predicts each attribute with a head."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Attribute:
    """One attribute: its name and the names of its values, in index order."""

    name: str
    values: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.values)


def encode_factors(values: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Joint labels from attribute values (N×H, one column per attribute, first most significant):
    mask 2, gender 1, age 0 with sizes (3, 2, 3) is 2·6 + 1·3 + 0 = 15.

    Args:
        values: N×H attribute values, each below its attribute's size.
        sizes: the number of values of each attribute, in order.

    Returns:
        The N joint labels (int64)."""
    values = np.asarray(values, dtype=np.int64).reshape(-1, len(sizes))
    return np.ravel_multi_index(tuple(values.T), tuple(sizes)).astype(np.int64)


def decode_factors(labels: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Attribute values of joint labels; the inverse of `encode_factors`.

    Args:
        labels: N joint labels.
        sizes: the number of values of each attribute, in order.

    Returns:
        N×H attribute values (int64)."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.stack(np.unravel_index(labels, tuple(sizes)), axis=1).astype(np.int64).reshape(len(labels), len(sizes))


def joint_class_names(attributes: Sequence[Attribute]) -> tuple[str, ...]:
    """Joint class names: the value names joined by '/' (wear/male/<30), or the joint index when
    every attribute's values are unnamed (0, 1, …)."""
    sizes = [attribute.size for attribute in attributes]
    count = int(np.prod(sizes))
    named = any(attribute.values != tuple(str(v) for v in range(attribute.size)) for attribute in attributes)
    if not named:
        return tuple(str(label) for label in range(count))
    values = decode_factors(np.arange(count), sizes)
    return tuple("/".join(attribute.values[v] for attribute, v in zip(attributes, row)) for row in values)
