"""The image cache: decoded and resized once, the same pixels every epoch."""
import logging

import numpy as np

from conftest import write_csv_dataset
from hierclf.data import load_training_items
from hierclf.data.cache import cached_items
from hierclf.data.dataset import ImageDataset, build_transform
from hierclf.recipe.schema import DataConfig


def test_cached_rows_give_the_batches_decoded_rows_give(tmp_path, caplog):
    items = load_training_items(DataConfig(csv=str(write_csv_dataset(tmp_path, per_class=4))))
    caplog.set_level(logging.INFO, logger="hierclf")
    cached = cached_items(items, 20, 1, budget_mb=1)
    assert cached.images is not None and cached.images.shape == (12, 20, 20, 1) and cached.paths is None
    assert "cache: 12 images decoded once at 20 px" in caplog.text
    for augment in ("none", "light"):  # augmentation draws alike on either: the same seed, the same pixels in
        batches = [ImageDataset(rows, items.labels, build_transform(20, (0.5,), (0.5,), augment, seed=1), 1)
                   .__getitems__(list(range(12)))[0] for rows in (items, cached)]
        assert np.allclose(batches[0].numpy(), batches[1].numpy(), atol=1e-6)
    caplog.clear()
    assert cached_items(items, 512, 1, budget_mb=1) is items
    assert "12 images at 512 px need 3 MiB, more than cache_mb = 1; decoding every epoch" in caplog.text
    assert cached_items(items, 20, 1, budget_mb=0) is items
