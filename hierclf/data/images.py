"""Decoding any image file a user may have into an RGB (or grey) uint8 array."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hierclf.data.bounded import checked_input
from hierclf.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

log = logging.getLogger(__name__)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def is_hidden(name: str) -> bool:
    """What file managers, archivers and notebooks leave beside the data (.DS_Store, ._a.jpg,
    .ipynb_checkpoints, __MACOSX): never a class, never an image."""
    return name.startswith(".") or name == "__MACOSX"


def images_under(root: Path, nested: bool = True) -> list[Path]:
    """The image files under `root` (with `nested` off, directly in it), sorted by their path's
    parts; hidden files and folders are left out, and counted in one warning. Linked folders are
    followed, each real folder read once: a link back up the tree (a loop), or a second link to a
    folder already read, is left out and named in one warning, never read twice or forever."""
    images, hidden, repeated = [], [], []
    visited = {os.path.realpath(root)}
    for folder, folders, files in os.walk(root, followlinks=True):
        hidden += sorted(name for name in folders + files if is_hidden(name))
        kept = []
        for name in sorted(name for name in folders if not is_hidden(name)) if nested else []:
            real = os.path.realpath(os.path.join(folder, name))
            if real in visited:
                repeated.append(os.path.join(folder, name))
                continue
            visited.add(real)
            kept.append(name)
        folders[:] = kept
        images += [Path(folder) / name for name in files if not is_hidden(name) and is_image_file(Path(folder) / name)]
    report_hidden(root, hidden)
    if repeated:
        log.warning("%s: %d linked folder%s left out, as the folder %s to is read already (a link loop, or two links "
                    "to one folder): %s%s", root, len(repeated), "" if len(repeated) == 1 else "s",
                    "it links" if len(repeated) == 1 else "each links", ", ".join(repeated[:3]),
                    ", …" if len(repeated) > 3 else "")
    return sorted(images, key=lambda path: path.relative_to(root).parts)


def report_hidden(root: Path, hidden: Sequence[str]) -> None:
    if hidden:
        names = sorted(set(hidden))
        log.warning("%s: %d hidden entr%s left out (%s%s)", root, len(hidden), "y" if len(hidden) == 1 else "ies",
                    ", ".join(names[:3]), ", …" if len(names) > 3 else "")


def decode_image(path: str | Path, channels: int = 3, max_side: int | None = None) -> np.ndarray:
    """H×W×channels uint8. Grey, palette, alpha, 16-bit and float images all come out alike:
    alpha is composited onto white, high bit depths are scaled to 0..255, EXIF rotation applied.

    With `max_side`, an image larger than that is decoded reduced, by a whole factor that keeps
    both sides at least `max_side`: a JPEG in Pillow's draft mode (its decoder skips the detail),
    any other format box-reduced right after decoding, before any conversion copies it. A
    photo of 12,000 px thus costs the memory of a small one when the network wants 224 px."""
    with _opened(path) as image:
        if max_side and image.format == "JPEG" and image.mode in ("RGB", "L"):
            image.draft(image.mode, (max_side, max_side))
        image.load()
        factor = min(image.size) // max_side if max_side else 1
        if factor >= 2:
            image = image.reduce(factor)
        return to_uint8(ImageOps.exif_transpose(image), channels)


def check_images(paths: Sequence[str], workers: int = 0) -> None:
    """Decode every file before training starts (reduced: a JPEG at an eighth of its size, which
    still reads all of it), so a file that is no image, is cut short or is too large stops the
    command before anything is written, rather than a fold later. `workers` processes share it."""
    from torch.utils.data import DataLoader

    for _ in DataLoader(_Decoded(list(paths)), batch_size=64, num_workers=workers, collate_fn=len):
        pass


class _Decoded:
    """Each file decoded and dropped: a dataset whose only job is to fail on a bad file."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> int:
        decode_image(self.paths[row], channels=1, max_side=8)
        return row


@contextmanager
def _opened(path: str | Path) -> Iterator[Image.Image]:
    """Pillow's image at `path`; whatever goes wrong reading it becomes one DataError naming the file."""
    path = str(checked_input(path, "image"))
    try:
        with Image.open(path) as image:
            yield image
    except UnidentifiedImageError:
        raise DataError(f"image {path} cannot be decoded (not an image format Pillow reads)") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"image {path} is too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"image {path} cannot be decoded ({error})") from None


def to_uint8(image: Image.Image, channels: int = 3) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        if image.mode == "F" and pixels.max() <= 1.0:
            top = 1.0
        grey = np.clip(pixels / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(grey, mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode in ("RGB", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if channels == 1 else pixels
