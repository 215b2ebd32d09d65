"""Training augmentation as albumentations pipelines: named presets, or transforms listed in the
recipe and checked against albumentations' own signatures before anything trains."""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hierclf.errors import RecipeError

if TYPE_CHECKING:  # albumentations loads where images are augmented; a preset's name is checked without it
    import albumentations as A

WHITE = 255


def preset_transforms(preset: str, channels: int = 3) -> list[A.BasicTransform]:
    """The transforms of a preset for images of `channels` (hue and saturation only for colour).
    `light` keeps orientation (digits, text); `heavy` is for natural images; `document` mimics scanned and photographed pages: turned by 90°, slightly rotated and
    skewed, blurred, noisy, unevenly lit, compressed, with white where the page moved away."""
    if preset == "none":
        return []
    import albumentations as A
    import cv2

    if preset == "light":
        return [A.Affine(scale=(0.9, 1.1), translate_percent=(-0.06, 0.06), rotate=(-10, 10), p=0.7),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5)]
    if preset == "heavy":
        return [A.HorizontalFlip(p=0.5),
                A.Affine(scale=(0.8, 1.2), translate_percent=(-0.1, 0.1), rotate=(-20, 20), shear=(-8, 8), p=0.8),
                A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.6),
                *([A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=15, p=0.4)]
                  if channels == 3 else []),
                A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3),
                A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.08, 0.2),
                                hole_width_range=(0.08, 0.2), p=0.4)]
    if preset == "document":
        white = dict(border_mode=cv2.BORDER_CONSTANT, fill=WHITE)
        return [A.RandomRotate90(p=0.3),
                A.Affine(scale=(0.9, 1.05), translate_percent=(-0.04, 0.04), rotate=(-5, 5), shear=(-3, 3),
                         p=0.7, **white),
                A.Perspective(scale=(0.02, 0.06), p=0.4, **white),
                A.OneOf([A.MotionBlur(blur_limit=(3, 5)), A.GaussianBlur(blur_limit=(3, 5))], p=0.3),
                A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
                A.OneOf([A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2),
                         A.RandomGamma(gamma_limit=(70, 130))], p=0.5),
                A.ImageCompression(quality_range=(40, 90), p=0.3)]
    raise RecipeError(f"unknown augmentation preset {preset!r}; expected none, light, heavy or document")


def augment_transforms(augment: str | Sequence[Mapping[str, Any]], where: str = "augment",
                       channels: int = 3) -> list[A.BasicTransform]:
    """A preset's transforms, or the recipe's list built one by one."""
    if isinstance(augment, str):
        return preset_transforms(augment, channels)
    return [_build(entry, f"{where}[{index}]") for index, entry in enumerate(augment)]


def check_augment_list(augment: Sequence[Mapping[str, Any]], where: str) -> None:
    """Build the list once, so a misspelt transform or argument stops the recipe, not fold 3."""
    augment_transforms(augment, where)


def _build(entry: Mapping[str, Any], where: str) -> A.BasicTransform | A.BaseCompose:
    """One transform from { name = "Affine", rotate = [-10, 10], p = 0.5 }; OneOf, SomeOf and
    Sequential take their own list under `transforms`."""
    import albumentations as A

    arguments = dict(entry)
    name = arguments.pop("name", None)
    if not isinstance(name, str):
        raise RecipeError(f"{where}: each transform needs name = \"<albumentations class>\", got {dict(entry)}")
    kind = getattr(A, name, None)
    if not (inspect.isclass(kind) and issubclass(kind, (A.BasicTransform, A.BaseCompose))):
        import difflib
        close = difflib.get_close_matches(name, [n for n in dir(A) if n[:1].isupper()], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"{where}: albumentations has no transform {name!r}{hint}")
    if issubclass(kind, A.BaseCompose):
        inner = arguments.get("transforms")
        if not isinstance(inner, (list, tuple)) or not inner:
            raise RecipeError(f"{where}: {name} needs transforms = [{{ name = … }}, …]")
        arguments["transforms"] = [_build(item, f"{where}.transforms[{i}]") for i, item in enumerate(inner)]
    arguments = {key: tuple(value) if isinstance(value, list) and key != "transforms" else value
                 for key, value in arguments.items()}
    try:  # albumentations quietly ignores unknown arguments; its signature does not
        inspect.signature(kind).bind(**arguments)
    except TypeError as error:
        allowed = ", ".join(inspect.signature(kind).parameters)
        raise RecipeError(f"{where}: {name}: {error}; its arguments are {allowed}") from None
    try:
        return kind(**arguments)
    except Exception as error:  # pydantic's ValidationError and plain ValueErrors alike
        detail = " ".join(str(error).split("\n")[:3]).strip()
        raise RecipeError(f"{where}: {name}({_show(arguments)}) is refused by albumentations: {detail}") from None


def _show(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in arguments.items() if key != "transforms")
