"""Offline augmentation: augmented copies of chosen classes written as image files, with a CSV
whose group column keeps every copy on its original's side of every fold.

Without that column, a copy in validation and its original in training make validation read
0.99 while the real score is 0.80, which is the leak one user's write-up describes."""
from __future__ import annotations

import csv
import io
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

import albumentations as A
from PIL import Image

from hierclf.data.augment import augment_transforms
from hierclf.data.items import Items
from hierclf.errors import DataError, HierclfError, RecipeError, option, unwritable


def choose_classes(text: str | None, class_names: Sequence[str]) -> list[int]:
    """`--classes 3,7` or `--classes Shirt,Coat`: class names first, else indices; none means all."""
    if not text:
        return list(range(len(class_names)))
    chosen = []
    for part in (piece.strip() for piece in text.split(",") if piece.strip()):
        if part in class_names:
            chosen.append(class_names.index(part))
        elif part.isdigit() and int(part) < len(class_names):
            chosen.append(int(part))
        else:
            shown = ", ".join(class_names[:20]) + ("…" if len(class_names) > 20 else "")
            raise HierclfError(f"{option('classes')}: {part!r} is neither a class name nor an index 0..{len(class_names) - 1} "
                               f"(classes: {shown})")
    return sorted(set(chosen))


def augment_dataset(items: Items, out: Path, copies: int, augment: str | Sequence[Mapping[str, Any]], channels: int,
                    columns: tuple[str, str, str], classes: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Write OUT/train.csv and OUT/train/: every original of `items` (the recipe's training rows,
    copied byte for byte) and `copies` augmented PNG copies of each row of `classes`, by
    `augment` (a preset or a list of transforms, as coarse.augment), read with `channels`.
    `columns` are the CSV's id, label and group columns (the recipe's data keys); the group of a
    copy is its original's group (or its original's id), so pointing data.csv at OUT/train.csv
    keeps folds leak-free. OUT appears only when complete."""
    if augment == "none":
        raise RecipeError(f"augment: coarse.augment is \"none\"; choose {option('augment')} light|heavy|document, or set "
                          "coarse.augment in the recipe")
    if copies < 1:
        raise HierclfError(f"{option('copies')} must be at least 1")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HierclfError(f"{option('out')} {out} already exists; choose a new folder")
    if items.paths is None:
        raise DataError("augment needs training images on disk")
    chosen = choose_classes(None if classes is None else classes, items.class_names)
    pipeline = A.Compose(augment_transforms(augment, "augment", channels), seed=seed)
    staging = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial"
    try:
        written = _write(items, chosen, copies, pipeline, channels, staging, columns)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()  # an empty folder the user made for it
        os.replace(staging, out)
    except OSError as error:  # DataError on a bad image is no OSError: it passes as it is
        raise unwritable(out, error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"csv": str(out / "train.csv"), **written}


def _write(items: Items, chosen: list[int], copies: int, pipeline: A.Compose, channels: int, staging: Path,
           columns: tuple[str, str, str]) -> dict[str, int]:
    images = staging / "train"
    images.mkdir(parents=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(columns))
    groups, stems = items.fold_groups, _file_stems(items)
    augmented = 0
    for row, stem in enumerate(stems):
        source = Path(items.paths[row])
        label, group = items.class_names[items.labels[row]], str(groups[row])
        original = f"{stem}{source.suffix.lower()}"
        shutil.copyfile(source, images / original)
        writer.writerow([original, label, group])
        if items.labels[row] not in chosen:
            continue
        pixels = items.image(row, channels)
        for copy in range(1, copies + 1):
            result = pipeline(image=pixels)["image"]
            name = f"{stem}__aug{copy}.png"
            Image.fromarray(result[:, :, 0] if result.shape[2] == 1 else result).save(images / name)
            writer.writerow([name, label, group])
            augmented += 1
    (staging / "train.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return {"originals": len(items), "copies": augmented, "classes": len(chosen)}


def _file_stems(items: Items) -> list[str]:
    """A distinct file-name stem per row: its id without folders or extension where those stay
    distinct (a.png and a.jpg do not), else the whole id spelt out."""
    def stem(image_id: str, path: str) -> str:
        suffix = Path(path).suffix
        bare = image_id[:-len(suffix)] if suffix and image_id.lower().endswith(suffix.lower()) else image_id
        return bare.replace("/", "__")
    stems = [stem(str(i), str(p)) for i, p in zip(items.ids, items.paths)]
    if len(set(stems)) < len(stems):
        stems = [str(i).replace("/", "__").replace(".", "_") for i in items.ids]
    return stems
