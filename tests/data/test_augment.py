"""Augmentation presets and lists checked against albumentations' signatures."""
import numpy as np

from conftest import shape_image
from hierclf.data.augment import augment_transforms
from hierclf.data.dataset import build_transform


def test_augment_presets_and_lists_build_and_apply():
    rng = np.random.default_rng(0)
    image = np.stack([shape_image(1, rng, size=32)] * 3, axis=2)
    for preset in ("light", "heavy", "document"):
        transform = build_transform(32, (0.5,) * 3, (0.5,) * 3, preset, seed=0)
        assert transform(image=image)["image"].shape == (3, 32, 32)
    grey = build_transform(32, (0.5,), (0.5,), "heavy", seed=0)  # no hue or saturation on grey images
    colour = build_transform(32, (0.5,) * 3, (0.5,) * 3, "heavy", seed=0)
    assert "HueSaturationValue" not in repr(grey) and "HueSaturationValue" in repr(colour)
    flip = augment_transforms(({"name": "HorizontalFlip", "p": 1.0},))
    assert np.array_equal(flip[0](image=image)["image"], image[:, ::-1])
    nested = augment_transforms(({"name": "OneOf", "p": 1.0, "transforms": [{"name": "VerticalFlip", "p": 1.0}]},))
    assert np.array_equal(nested[0](image=image)["image"], image[::-1])
    assert augment_transforms("none") == []
