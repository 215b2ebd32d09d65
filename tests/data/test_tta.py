"""Test-time views: one registry from name to transform."""
import pytest
import torch

from hierclf.errors import RecipeError
from hierclf.data.tta import VIEWS, View, parse_view


def test_each_view_transforms_a_batch():
    images = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(View("hflip")(images), images.flip(3))
    assert torch.equal(View("vflip")(images), images.flip(2))
    assert torch.equal(View("rot90")(images), torch.rot90(images, 1, dims=(2, 3)))
    assert torch.equal(View("rot180")(View("rot180")(images)), images)
    assert set(VIEWS) == {"hflip", "vflip", "rot90", "rot180", "rot270", "scale"}


def test_scale_zooms_about_the_centre():
    images = torch.zeros(1, 1, 8, 8)
    images[..., 3:5, 3:5] = 1.0
    zoomed_in = View("scale", 2.0)(images)
    assert zoomed_in.shape == images.shape and zoomed_in[..., 2:6, 2:6].min() > 0.5  # the centre grew
    zoomed_out = View("scale", 0.5)(images)
    assert zoomed_out.shape == images.shape and zoomed_out[..., :2, :].abs().max() == 0  # padded border


def test_names_parse_or_are_refused_naming_where():
    assert parse_view("hflip", "x") == View("hflip") and parse_view("scale=1.1", "x") == View("scale", 1.1)
    for text in ("spin", "scale", "scale=9", "scale=x", "hflip=2"):
        with pytest.raises(RecipeError, match=f"--tta: unknown TTA variant '{text}'"):
            parse_view(text, "--tta")
