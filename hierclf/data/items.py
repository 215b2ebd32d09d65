"""`Items`: the rows a stage trains or predicts on, whatever source they came from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from hierclf.data.images import decode_image, to_uint8
from hierclf.errors import DataError

UNKNOWN_LABEL = -1


@dataclass(frozen=True, eq=False)
class Items:
    """Image rows: an id each, a label (or UNKNOWN_LABEL), a fold group, and either a file
    path or the pixels themselves (in-memory arrays)."""

    ids: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    paths: np.ndarray | None = None
    images: np.ndarray | None = None
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.images is None):
            raise ValueError("Items needs exactly one of paths or images")
        n = len(self.ids)
        for name in ("labels", "paths", "images", "groups"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"Items.{name} has {len(value)} rows for {n} ids")
        unique, counts = np.unique(self.ids, return_counts=True)
        if len(unique) != n:
            raise DataError(f"image ids must be unique; {str(unique[counts > 1][0])!r} appears "
                            f"{counts[counts > 1][0]} times")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_labels(self) -> bool:
        return len(self) > 0 and bool((self.labels != UNKNOWN_LABEL).all())

    @property
    def fold_groups(self) -> np.ndarray:
        """The group each row must share a fold with: its group column, else its own id."""
        return self.groups if self.groups is not None else self.ids

    def subset(self, rows: np.ndarray) -> "Items":
        def pick(value: np.ndarray | None) -> np.ndarray | None:
            return None if value is None else value[rows]
        return Items(ids=self.ids[rows], labels=self.labels[rows], class_names=self.class_names,
                     paths=pick(self.paths), images=pick(self.images), groups=pick(self.groups))

    def image(self, row: int, channels: int, max_side: int | None = None) -> np.ndarray:
        """H×W×channels uint8 pixels of one row; a file larger than `max_side` may be decoded
        reduced (see `decode_image`)."""
        if self.paths is not None:
            return decode_image(self.paths[row], channels, max_side)
        pixels = self.images[row]
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if pixels.shape[2] == channels:
            return pixels
        return to_uint8(Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels), channels)

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: Sequence[int] | None = None,
                    class_names: Sequence[str] | None = None, ids: Sequence[str] | None = None,
                    groups: Sequence[str] | None = None) -> "Items":
        """Rows from in-memory pixels: N×H×W (grey) or N×H×W×C (C = 1, 3 or 4) uint8."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise DataError(f"images must be uint8 (0..255), got {images.dtype}")
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
            raise DataError(f"images must be N×H×W or N×H×W×C with C in 1, 3, 4; got shape {images.shape}")
        n = len(images)
        label_array = (np.full(n, UNKNOWN_LABEL, dtype=np.int64) if labels is None
                       else np.asarray(labels, dtype=np.int64))
        if class_names is None:
            top = int(label_array.max()) + 1 if n and labels is not None else 0
            class_names = [str(index) for index in range(top)]
        known = label_array[label_array != UNKNOWN_LABEL]
        if len(known) and (known.min() < 0 or known.max() >= len(class_names)):
            bad = known[(known < 0) | (known >= len(class_names))][0]
            raise DataError(f"label {bad} is out of range 0..{len(class_names) - 1}")
        id_array = np.asarray([str(i) for i in (ids if ids is not None else range(n))])
        group_array = None if groups is None else np.asarray([str(g) for g in groups])
        return cls(ids=id_array, labels=label_array, class_names=tuple(class_names), images=images,
                   groups=group_array)
