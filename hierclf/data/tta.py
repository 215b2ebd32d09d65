"""Test-time augmentation: the views an image is also shown in at prediction, one registry from
name to transform. `predict` averages the softmax of the image and of each view."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from hierclf.errors import RecipeError

if TYPE_CHECKING:  # the views run where torch already is; a recipe's views are checked without it
    import torch


def _zoom(images: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom about the centre, keeping the size: above 1 it crops in, below 1 it pads out with
    zeros (the mean colour, once normalised)."""
    import torch

    height, width = (int(side) for side in images.shape[-2:])  # plain numbers, also when traced
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    scaled = torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                             antialias=factor < 1)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    if factor >= 1:
        return scaled[..., top:top + height, left:left + width]
    pad = (-left, width - size[1] + left, -top, height - size[0] + top)
    return torch.nn.functional.pad(scaled, pad)


VIEWS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "hflip": lambda images, _: images.flip(3),
    "vflip": lambda images, _: images.flip(2),
    "rot90": lambda images, _: images.rot90(1, (2, 3)),
    "rot180": lambda images, _: images.rot90(2, (2, 3)),
    "rot270": lambda images, _: images.rot90(3, (2, 3)),
    "scale": _zoom,
}
"""Each view of a normalised N×C×H×W batch; only `scale` reads its factor (written scale=F)."""
SCALE_RANGE = (0.25, 4.0)


@dataclass(frozen=True)
class View:
    """One test-time view: a name from VIEWS, and the factor of `scale`."""

    name: str
    factor: float = 1.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return VIEWS[self.name](images, self.factor)


def parse_view(text: str, where: str) -> View:
    """`hflip` → View("hflip"); `scale=1.1` → View("scale", 1.1); anything else names `where`."""
    name, _, factor_text = text.partition("=")
    if name in VIEWS and (name == "scale") == bool(factor_text):
        if not factor_text:
            return View(name)
        try:
            factor = float(factor_text)
        except ValueError:
            factor = 0.0
        if SCALE_RANGE[0] <= factor <= SCALE_RANGE[1]:
            return View(name, factor)
    fixed = ", ".join(name for name in VIEWS if name != "scale")
    raise RecipeError(f"{where}: unknown TTA variant {text!r}; expected {fixed} or scale=F with "
                      f"{SCALE_RANGE[0]} ≤ F ≤ {SCALE_RANGE[1]:g}")


def views_option(text: str | None) -> tuple[str, ...] | None:
    """`--tta`'s value as view names: None (not given) keeps the recipe's predict.tta, and 'none'
    turns it off."""
    if text is None:
        return None
    return () if text.strip() == "none" else tuple(view.strip() for view in text.split(","))
