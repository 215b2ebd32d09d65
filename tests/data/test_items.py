"""Rows from any source: ids, labels, groups, and pixels on disk or in memory."""
import numpy as np
import pytest

from hierclf.data import Items
from hierclf.errors import DataError


def test_in_memory_arrays_grey_rgb_rgba():
    grey = np.zeros((4, 8, 8), dtype=np.uint8)
    items = Items.from_arrays(grey, labels=[0, 1, 1, 0], class_names=["a", "b"])
    assert items.image(0, 3).shape == (8, 8, 3) and items.image(0, 1).shape == (8, 8, 1)
    rgba = np.zeros((2, 8, 8, 4), dtype=np.uint8)
    assert (Items.from_arrays(rgba).image(1, 3) == 255).all()
    with pytest.raises(DataError, match="uint8"):
        Items.from_arrays(grey.astype(np.float32))
    with pytest.raises(DataError, match="label 2 is out of range 0..1"):
        Items.from_arrays(grey, labels=[0, 1, 2, 0], class_names=["a", "b"])
    with pytest.raises(DataError, match="N×H×W or N×H×W×C"):
        Items.from_arrays(np.zeros((2, 8, 8, 2), dtype=np.uint8))


def test_ids_groups_and_subsets():
    pixels = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2)
    items = Items.from_arrays(pixels, labels=[0, 1, 0, 1], ids=["a", "b", "c", "d"], groups=["g", "g", "h", "h"])
    assert items.fold_groups.tolist() == ["g", "g", "h", "h"] and items.has_labels
    assert Items.from_arrays(pixels).fold_groups.tolist() == ["0", "1", "2", "3"]  # no groups: each its own
    part = items.subset(np.array([3, 1]))
    assert part.ids.tolist() == ["d", "b"] and np.array_equal(part.image(0, 1)[..., 0], pixels[3])
    with pytest.raises(DataError, match="ids must be unique; 'a' appears 2 times"):
        Items.from_arrays(pixels[:2], ids=["a", "a"])
    assert not Items.from_arrays(pixels).has_labels
