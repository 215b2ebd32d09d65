"""Built-in datasets written out in the competition layout (train.csv + train/, test.csv + test/),
so the demo and the benchmarks exercise the same file-reading path a user's data takes."""
from __future__ import annotations

import csv
import gzip
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from hierclf.data.bounded import LIMITS, checked_input
from hierclf.errors import DataError, option, unwritable

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
DIGITS_CLASSES = tuple(str(digit) for digit in range(10))

log = logging.getLogger(__name__)


def write_digits(out: Path, test_fraction: float = 0.2, seed: int = 0) -> Path:
    """scikit-learn's 1,797 handwritten digits (8×8, 17 grey levels) as PNG files.

    Args:
        out: the folder to write train.csv, train/, test.csv and test/ into.
        test_fraction: the stratified share held out as the test split.
        seed: the split's seed.

    Returns:
        `out`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    rows = np.arange(len(pixels))
    train_rows, test_rows = train_test_split(rows, test_size=test_fraction, random_state=seed,
                                             stratify=digits.target)
    splits = {"train": np.sort(train_rows), "test": np.sort(test_rows)}
    return _write_layout(out, {name: (pixels[r], digits.target[r], r) for name, r in splits.items()},
                         DIGITS_CLASSES)


def write_fashion_mnist(out: Path, source: Path = FASHION_MNIST_DIR, train_limit: int = 0,
                        test_limit: int = 0, seed: int = 0) -> Path:
    """Fashion-MNIST (28×28 grey, 60,000 train / 10,000 official test) from Debian's idx files;
    `*_limit` keeps a stratified subset of that many rows.

    Args:
        out: the folder to write train.csv, train/, test.csv and test/ into.
        source: the folder of the idx files (Debian's dataset-fashion-mnist).
        train_limit, test_limit: rows kept of each split (0: all).
        seed: the subsets' seed.

    Returns:
        `out`."""
    splits = {name: read_fashion_mnist(name, source, limit, seed)
              for name, limit in (("train", train_limit), ("test", test_limit))}
    return _write_layout(out, splits, FASHION_MNIST_CLASSES)


def read_fashion_mnist(split: str, source: Path = FASHION_MNIST_DIR, limit: int = 0,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images (N×28×28 uint8), labels and row numbers of the `train` or `test` split; with `limit`,
    a stratified subset of that many rows.

    Args:
        split: "train" or "test".
        source: the folder of the idx files.
        limit: rows kept (0: all), stratified.
        seed: the subset's seed.

    Returns:
        The images, their labels (indices into FASHION_MNIST_CLASSES) and their row numbers."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = _read_idx(source / f"{prefix}-images-idx3-ubyte.gz")
    labels = _read_idx(source / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    rows = np.arange(len(labels))
    if 0 < limit < len(rows):
        from sklearn.model_selection import train_test_split
        rows = np.sort(train_test_split(rows, train_size=limit, random_state=seed, stratify=labels)[0])
    return images[rows], labels[rows], rows


def _read_idx(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path} not found: install Debian's Fashion-MNIST with "
                        f"`apt-get install -y dataset-fashion-mnist`, or pass {option('source')} DIR")
    limit = LIMITS["dataset file"]
    with gzip.open(checked_input(path, "dataset file"), "rb") as handle:
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        raise DataError(f"{path} unpacks to more than {limit >> 20} MB; it is not a Fashion-MNIST idx file")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _write_layout(out: Path, splits: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                  class_names: Sequence[str]) -> Path:
    """Writes into a temporary sibling folder, then renames it: a killed run leaves no half set."""
    if out.exists():
        if all((out / f"{name}.csv").is_file() for name in splits):
            log.info("%s already holds the dataset; keeping it", out)
            return out
        raise DataError(f"{out} exists but is not a complete dataset folder; remove it or pick another")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, (pixels, labels, source_rows) in splits.items():
            (staging / name).mkdir()
            with (staging / f"{name}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", "label"])
                for image, label, source_row in zip(pixels, labels, source_rows):
                    image_id = f"{name}-{source_row:05d}"
                    Image.fromarray(image).save(staging / name / f"{image_id}.png")
                    writer.writerow([image_id, class_names[label]])
        os.replace(staging, out)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise unwritable(out, error) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
