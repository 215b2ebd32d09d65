"""Lay out the two public photo sets for the real-photo benchmarks: clothing as a CSV dataset
(train.csv, test.csv and the images beside them), faces as train/ and test/ folders under the
files' own names (the recipe reads their labels), hard-linked where the file system allows.

Neither set is part of the repository; bring each with the `fetch` tool (or git clone) and
extract it first:

    git -C CLOTHING.git archive --format=tar HEAD | tar -x -C SRC/clothing       # alexeygrigorev/clothing-dataset-small
    git -C FACES.git archive --format=tar HEAD crop_part1 | tar -x -C SRC/faces  # Mohanish-5744/Major_Ensemble_Gender

    python benchmarks/photo_sets.py clothing SRC/clothing data/clothing
    python benchmarks/photo_sets.py faces SRC/faces/crop_part1 data/utkface
    git -C CALTECH.git archive --format=tar HEAD 101_ObjectCategories | tar -x -C SRC/caltech  # toyo97/Homework2-Caltech101
    python benchmarks/photo_sets.py caltech SRC/caltech/101_ObjectCategories data/caltech101

- **clothing** (CC0): 10 classes in class folders; train/ and validation/ become train.csv
  (3,409 photos), test/ test.csv (372).
- **faces**: UTKFace's aligned faces (`AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`, 200 px; for
  non-commercial research only), adults only (18 or more), in train/ and test/ under their own
  names: recipes/faces-utk.toml reads gender × age bin (<30, 30–59, ≥60) from them with
  `data.pattern`. Byte-identical files are one photo: a file that appears twice with one label is
  kept once, with two labels it is dropped (both are counted), so no photo sits in both train/
  and test/. A stratified fifth (seed 0) is the test set.
- **caltech** (Caltech-101, Fei-Fei, Fergus and Perona 2004; objects ImageNet already knows): the
  101 object classes (BACKGROUND_Google left out), as its usual protocol has it: 30 training
  photos per class drawn with seed 0 (3,030), and up to 20 of the rest per class as the test set
  (1,000 or so); a CSV dataset laid out as clothing's.

The fine-tuning benchmarks of issue 31 read the faces as a CSV this script wrote then (the same
4,620 training faces, labels and order: `git show 3beeb48:benchmarks/photo_sets.py`).
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split
from harness import benchmark_parser

GENDERS = ("male", "female")          # UTKFace: 0 male, 1 female
AGES = ("<30", "30-59", ">=60")


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def clothing(src: Path, out: Path) -> None:
    for split, folders in (("train", ("train", "validation")), ("test", ("test",))):
        rows = []
        for folder in folders:
            for image in sorted((src / folder).glob("*/*.jpg")):
                image_id = f"{image.parent.name}-{image.stem}"
                _link(image, out / split / f"{image_id}.jpg")
                rows.append({"id": image_id, "label": image.parent.name})
        _write_csv(out / f"{split}.csv", rows)
        print(f"{split}: {len(rows)} photos, {dict(sorted(Counter(r['label'] for r in rows).items()))}")


def caltech(src: Path, out: Path, train_per_class: int = 30, test_per_class: int = 20) -> None:
    rng = np.random.default_rng(0)
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for folder in sorted(path for path in src.iterdir() if path.is_dir() and path.name != "BACKGROUND_Google"):
        images = sorted(folder.glob("*.jpg"))
        order = rng.permutation(len(images))
        chosen = {"train": order[:train_per_class], "test": order[train_per_class:train_per_class + test_per_class]}
        for split, rows in chosen.items():
            for row in sorted(rows):
                image_id = f"{folder.name}-{images[row].stem}"
                _link(images[row], out / split / f"{image_id}.jpg")
                splits[split].append({"id": image_id, "label": folder.name})
    for split, rows in splits.items():
        _write_csv(out / f"{split}.csv", rows)
        counts = Counter(row["label"] for row in rows)
        print(f"{split}: {len(rows)} photos of {len(counts)} classes, {min(counts.values())} to "
              f"{max(counts.values())} per class")


def _age_bin(age: int) -> str:
    return AGES[0] if age < 30 else AGES[1] if age < 60 else AGES[2]


def faces(src: Path, out: Path) -> None:
    """Adults only, byte-identical files kept once (dropped where their labels differ), then a
    stratified fifth as the test set: out/train/ and out/test/, each file under its own name, so
    the recipe reads its labels through data.pattern."""
    name = re.compile(r"(\d+)_([01])_\d_\d+\.jpg\.chip\.jpg$")
    by_digest, unreadable, children = defaultdict(list), 0, 0
    for image in sorted(src.glob("*.jpg")):
        match = name.match(image.name)
        if not match:
            unreadable += 1
            continue
        age, gender = int(match[1]), int(match[2])
        if age < 18:
            children += 1
            continue
        label = f"{GENDERS[gender]}/{_age_bin(age)}"
        by_digest[hashlib.sha1(image.read_bytes()).hexdigest()].append((image, label))
    rows, repeated, conflicting = [], 0, 0
    for copies in by_digest.values():
        if len({label for _, label in copies}) > 1:
            conflicting += 1
            continue
        repeated += len(copies) > 1
        rows.append(copies[0])
    rows.sort()
    print(f"{len(rows)} adult faces; left out: {children} children, {unreadable} names without age_gender_race, "
          f"{conflicting} photos stored twice with different labels; {repeated} stored twice with one label, "
          f"kept once")
    labels = np.array([label for _, label in rows])
    train, test = train_test_split(np.arange(len(rows)), test_size=0.2, stratify=labels, random_state=0)
    for split, chosen in (("train", train), ("test", test)):
        for row in sorted(chosen):
            _link(rows[row][0], out / split / rows[row][0].name)
        print(f"{split}: {len(chosen)} faces, {dict(sorted(Counter(labels[chosen]).items()))}")


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("name", choices=["clothing", "faces", "caltech"])
    parser.add_argument("src", type=Path, help="the extracted set (clothing: the folder holding train/; faces: "
                                               "crop_part1/; caltech: 101_ObjectCategories/)")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    {"clothing": clothing, "faces": faces, "caltech": caltech}[args.name](args.src, args.out)


if __name__ == "__main__":
    main()
