"""Sources: a CSV plus an image folder, a class-per-folder tree, a folder whose paths hold the
labels (`data.pattern`, and its preset the face-mask competition's folder of people), or a plain
folder of images.

Everything a source can get wrong (a missing column, a missing image, an unknown label) is
found here, before any training starts, and reported naming the file and the row.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hierclf.data.bounded import checked_input
from hierclf.config.data import DataConfig
from hierclf.data.images import IMAGE_EXTENSIONS, check_images, images_under, is_hidden, is_image_file, report_hidden
from hierclf.data.items import UNKNOWN_LABEL, Items
from hierclf.data.labels import Attribute, encode_factors, joint_class_names
from hierclf.data.pattern import Pattern, bin_names, read_pattern_folder
from hierclf.errors import DataError, RecipeError, option

log = logging.getLogger(__name__)


def load_training_items(data: DataConfig, attributes: Sequence[Attribute] = (), workers: int = 0,
                        check_files: bool = True) -> Items:
    """The labelled rows a recipe's [data] section points at.

    Args:
        data: the recipe's [data] section.
        attributes: the attributes labels combine (a recipe's heads, `label_attributes`): the
            classes are then their combinations, and a CSV may give one column per attribute
            (named as the attribute) instead of the joint label.
        workers: processes that decode the images to check them.
        check_files: decode every image once, so a bad file stops here.

    Returns:
        The rows, each with its id, label, fold group and file."""
    class_names = joint_class_names(attributes) if attributes else data.class_names or None
    where = data.source
    if data.mask_images:
        items = read_mask_folder(Path(data.mask_images), data.age_bounds, attributes)
    elif data.pattern:
        items = read_pattern_folder(Path(data.images), Pattern(data.pattern, data.pattern_values, data.pattern_bins,
                                                               data.pattern_unmatched == "skip", data.label_column,
                                                               data.group_column),
                                    attributes, class_names)
    elif data.csv:
        columns = CsvColumns(data.id_column, data.label_column, data.group_column, data.ids_outside)
        items = read_csv_items(Path(data.csv), Path(data.images) if data.images else None, columns,
                               class_names=class_names, labels_required=True, attributes=attributes)
    elif data.folder:
        items = read_class_tree(Path(data.folder), class_names=class_names)
    else:
        raise RecipeError("the recipe's [data] needs csv (a CSV of id,label), folder (a class-per-folder tree), "
                          "images with pattern (labels in the file names) or mask_images (the face-mask "
                          "competition's folder)")
    if len(items) == 0:
        raise DataError(f"{where} holds no images")
    if not items.has_labels:
        row = int(np.flatnonzero(items.labels == UNKNOWN_LABEL)[0])
        line = f", line {row + 2}" if data.csv and not data.mask_images else ""
        raise DataError(f"{where}{line}: image {str(items.ids[row])!r} has no label")
    _check_every_class_has_rows(items, where, joint=bool(attributes))
    if check_files and items.paths is not None:
        check_images(items.paths, workers)
    return items


def load_input_items(path: Path, class_names: Sequence[str], id_column: str = "id",
                     label_column: str = "label", images: Path | None = None,
                     attributes: Sequence[Attribute] = (), outside_allowed: bool = False) -> Items:
    """Rows to predict: a CSV of ids, a class-per-folder tree, or a folder of images.

    Args:
        path: the input.
        class_names: the run's classes, in label order.
        id_column, label_column: the CSV's columns of ids and (optional) labels.
        images: the folder of a CSV's images (default: beside the CSV, see `default_image_dir`).
        attributes: the attributes a CSV may give one column each instead of the label.
        outside_allowed: let a CSV's ids leave the image folder (absolute, or climbing out).

    Returns:
        The rows, with their labels where the input carries them, so predictions can be scored."""
    if path.exists() and not path.is_dir():  # a CSV; anything else that is no folder is refused there
        return read_csv_items(path, images, CsvColumns(id_column, label_column, "", outside_allowed),
                              class_names=class_names, labels_required=False, attributes=attributes)
    if not path.is_dir():
        raise DataError(f"input {path} does not exist")
    entries = [entry for entry in sorted(path.iterdir()) if not is_hidden(entry.name)]
    if any(is_image_file(entry) for entry in entries):
        return read_image_folder(path, class_names)
    if any(entry.is_dir() for entry in entries):
        return read_class_tree(path, class_names=class_names, allow_unknown=False)
    raise DataError(f"input folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")


def default_image_dir(csv_path: Path) -> Path:
    """train.csv's images live in train/ beside it when that folder exists, else beside it."""
    beside = csv_path.with_suffix("")
    return beside if beside.is_dir() else csv_path.parent


@dataclass(frozen=True)
class CsvColumns:
    """Which of a CSV's columns hold the id, the label and the fold group ("": none), and whether
    its ids may leave the image folder."""

    id: str = "id"
    label: str = "label"
    group: str = ""
    ids_outside: bool = False


def read_csv_items(csv_path: Path, images: Path | None, columns: CsvColumns, *,
                   class_names: Sequence[str] | None, labels_required: bool,
                   attributes: Sequence[Attribute] = ()) -> Items:
    images = images or default_image_dir(csv_path)
    id_column, label_column, group_column = columns.id, columns.label, columns.group
    rows, header = _read_csv(csv_path)
    by_head = bool(attributes) and label_column not in header and all(a.name in header for a in attributes)
    missing = [name for name in (id_column,) + ((label_column,) if labels_required and not by_head else ())
               if name not in header]
    if missing:
        raise DataError(f"{csv_path}: no column {missing[0]!r}; columns are {', '.join(header)} "
                        f"(set data.id_column / data.label_column)")
    ids = [row[id_column] for row in rows]  # exactly as written: an id may begin or end with a space
    first_line: dict[str, int] = {}
    for line, image_id in enumerate(ids, start=2):
        if not image_id.strip():
            raise DataError(f"{csv_path}, line {line}: empty {id_column!r}")
        if image_id in first_line:
            raise DataError(f"{csv_path}, line {line}: id {image_id!r} appears again (first on line "
                            f"{first_line[image_id]})")
        first_line[image_id] = line
    paths = _resolve_images(ids, images, csv_path, columns.ids_outside)
    if by_head:
        values = np.stack([_parse_labels([row[attribute.name].strip() for row in rows], attribute.values,
                                         f"{csv_path}, column {attribute.name!r}")[0] for attribute in attributes],
                          axis=1)
        unknown = (values == UNKNOWN_LABEL).any(1)
        labels = np.full(len(rows), UNKNOWN_LABEL, dtype=np.int64)
        labels[~unknown] = encode_factors(values[~unknown], [attribute.size for attribute in attributes])
        names = joint_class_names(attributes)
    elif label_column in header:
        labels, names = _parse_labels([row[label_column].strip() for row in rows], class_names,
                                      f"{csv_path}, column {label_column!r}")
    else:
        labels, names = np.full(len(ids), UNKNOWN_LABEL, dtype=np.int64), tuple(class_names or ())
    groups = None
    if group_column and group_column in header:
        groups = np.asarray([row[group_column].strip() or image_id for row, image_id in zip(rows, ids)])
    return Items(ids=np.asarray(ids), labels=labels, class_names=names, paths=np.asarray(paths),
                 groups=groups)


def read_class_tree(root: Path, class_names: Sequence[str] | None = None,
                    allow_unknown: bool = False) -> Items:
    """root/<class>/**/<image>: the folder names are the class names (sorted, as torchvision does)."""
    if not root.is_dir():
        raise DataError(f"folder {root} does not exist")
    entries = sorted(root.iterdir())
    report_hidden(root, [entry.name for entry in entries if is_hidden(entry.name)])
    folders = [entry for entry in entries if entry.is_dir() and not is_hidden(entry.name)]
    if not folders:
        raise DataError(f"{root} has no class folders (expected {root}/<class>/<image>)")
    names = tuple(class_names) if class_names else tuple(folder.name for folder in folders)
    index_of = {name: index for index, name in enumerate(names)}
    ids, paths, labels = [], [], []
    for folder in folders:
        if folder.name not in index_of and not allow_unknown:
            raise DataError(f"{folder}: {folder.name!r} is not a class of this run; classes are "
                            f"{', '.join(names)}")
        for path in images_under(folder):
            ids.append(path.relative_to(root).as_posix())
            paths.append(str(path))
            labels.append(index_of.get(folder.name, UNKNOWN_LABEL))
    return Items(ids=np.asarray(ids), labels=np.asarray(labels, dtype=np.int64), class_names=names,
                 paths=np.asarray(paths))


MASK_FILES = {"mask1": 0, "mask2": 0, "mask3": 0, "mask4": 0, "mask5": 0, "incorrect_mask": 1, "normal": 2}
"""The competition's file names and the mask value each means."""
MASK_VALUES = ("wear", "incorrect", "not_wear")
GENDER_VALUES = ("male", "female")


def mask_attributes(age_bounds: Sequence[int]) -> tuple[Attribute, ...]:
    """The competition's attributes: mask × gender × age, label = mask·6 + gender·3 + age."""
    return (Attribute("mask", MASK_VALUES), Attribute("gender", GENDER_VALUES), Attribute("age", bin_names(age_bounds)))


def mask_pattern(age_bounds: Sequence[int]) -> Pattern:
    """The competition's folder as a pattern (a preset of `data.pattern`, not a reader of its own):
    the person id is the fold group, so one person's photos never sit on both sides of a split."""
    return Pattern(regex=r"(?P<group>[^/_]+)_(?P<gender>[^/_]+)_[^/_]+_(?P<age>\d+)/"
                         r"(?P<mask>mask[1-5]|incorrect_mask|normal)\.[^/.]+",
                   values={"mask": {name: MASK_VALUES[value] for name, value in MASK_FILES.items()},
                           "gender": {name: name for name in GENDER_VALUES}},
                   bins={"age": tuple(age_bounds)}, attributes=mask_attributes(age_bounds), where="data.mask_images",
                   layout="expected <person-id>_<gender>_<race>_<age>/{mask1..mask5,incorrect_mask,normal}.<ext>, "
                          "as 000001_female_Asian_45/mask1.jpg")


def read_mask_folder(root: Path, age_bounds: Sequence[int], attributes: Sequence[Attribute] = ()) -> Items:
    """root/<person-id>_<gender>_<race>_<age>/{mask1..mask5,incorrect_mask,normal}.<ext>: one row
    per photo with its mask, gender and age bin (`mask_pattern`). Labels follow `attributes` (the
    recipe's heads, in its order), else the competition's mask·6 + gender·3 + age."""
    sizes = {attribute.name: attribute.size for attribute in mask_attributes(age_bounds)}
    if attributes and {attribute.name: attribute.size for attribute in attributes} != sizes:
        raise RecipeError(f"data.mask_images gives heads {', '.join(f'{k} ({v})' for k, v in sizes.items())}; "
                          f"hierarchy.heads has " + ", ".join(f"{a.name} ({a.size})" for a in attributes))
    return read_pattern_folder(root, mask_pattern(age_bounds), attributes)


def read_image_folder(root: Path, class_names: Sequence[str]) -> Items:
    """Every image directly in root, unlabelled; the file name is the id."""
    files = images_under(root, nested=False)
    return Items(ids=np.asarray([path.name for path in files]),
                 labels=np.full(len(files), UNKNOWN_LABEL, dtype=np.int64),
                 class_names=tuple(class_names), paths=np.asarray([str(path) for path in files]))


def _read_csv(path: Path) -> tuple[list[dict[str, str]], tuple[str, ...]]:
    try:
        with checked_input(path, "CSV").open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = tuple(reader.fieldnames or ())
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"CSV {path} cannot be read: {error}") from None
    for line, row in enumerate(rows, start=2):
        if None in row or any(value is None for value in row.values()):
            raise DataError(f"{path}, line {line}: expected {len(header)} fields")
    return rows, header


OUTSIDE_OPTION = f"data.ids_outside = true, or predict {option('ids_outside')}"


def _resolve_images(ids: list[str], folder: Path, csv_path: Path, outside_allowed: bool = False) -> list[str]:
    """The file of each id: folder/id, else folder/id + a known image extension. An id that leaves
    the folder (absolute, or climbing out with ..) is refused unless `outside_allowed`: a CSV from
    elsewhere must not make the command read, train on or show any file the user can read."""
    if not folder.is_dir():
        raise DataError(f"image folder {folder} (for {csv_path}) does not exist; set data.images")
    present = {entry.name for entry in folder.iterdir()}
    stems: dict[str, list[str]] = {}
    for name in sorted(present):
        stem, dot, suffix = name.rpartition(".")
        if dot and f".{suffix.lower()}" in IMAGE_EXTENSIONS:
            stems.setdefault(stem, []).append(name)
    paths, missing = [], []
    for line, image_id in enumerate(ids, start=2):
        if image_id in present:
            paths.append(str(folder / image_id))
        elif image_id in stems:
            if len(stems[image_id]) > 1:
                raise DataError(f"{csv_path}, line {line}: id {image_id!r} could be any of "
                                f"{' and '.join(stems[image_id])} in {folder}; write the id with its extension, "
                                f"or remove the images that are not meant")
            paths.append(str(folder / stems[image_id][0]))
        elif "/" in image_id and (folder / image_id).is_file():
            if not outside_allowed and _leaves(image_id):
                raise DataError(f"{csv_path}, line {line}: id {image_id!r} points outside the image folder "
                                f"{folder}; move the image in, or allow such ids ({OUTSIDE_OPTION})")
            paths.append(str(folder / image_id))
        else:
            missing.append(image_id)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(f"{csv_path}: no image in {folder} for id {shown}{more}")
    return paths


def _leaves(image_id: str) -> bool:
    """An absolute id, or one whose ".." climb out of the folder; read as written, so a link the
    user put inside the folder is still followed."""
    normal = os.path.normpath(image_id)
    return os.path.isabs(image_id) or normal == ".." or normal.startswith(".." + os.sep)


def _parse_labels(values: list[str], class_names: Sequence[str] | None,
                  where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels as class indices. A value is a class name, or a class index when names are numbers."""
    if class_names is None:
        given = [value for value in values if value]
        if given and all(value.lstrip("-").isdigit() for value in given):
            for row, value in enumerate(values):
                if value.startswith("-"):
                    raise DataError(f"{where}, line {row + 2}: label {value!r} is negative; integer labels are "
                                    f"class indices 0, 1, 2, …")
            top = max(int(value) for value in given)
            class_names = tuple(str(index) for index in range(top + 1))
        else:
            class_names = tuple(sorted(set(given)))
    index_of = {name: index for index, name in enumerate(class_names)}
    labels = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        if value in index_of:
            labels[row] = index_of[value]
        elif value.isdigit() and int(value) < len(class_names):
            labels[row] = int(value)
        elif value == "":
            labels[row] = UNKNOWN_LABEL
        else:
            raise DataError(f"{where}, line {row + 2}: label {value!r} is not a class; expected one of "
                            f"{_preview(class_names)} or an index 0..{len(class_names) - 1}")
    return labels, tuple(class_names)


def _check_every_class_has_rows(items: Items, where: str, joint: bool) -> None:
    """Refuse training classes without a single image: integer labels that skip indices (0, 1, 2, 7
    makes classes 3 to 6 empty) or data.class_names naming a class the data lacks. With attribute
    heads (`joint`) an empty combination is only named: each head still learns its values from
    the other rows, and their product predicts it."""
    counts = np.bincount(items.labels, minlength=len(items.class_names))
    empty = [name for name, count in zip(items.class_names, counts) if count == 0]
    if empty and joint:
        log.warning("%s: joint class%s %s %s no training row; the heads' product can still predict %s", where,
                    "es" if len(empty) > 1 else "", _preview(empty), "have" if len(empty) > 1 else "has",
                    "them" if len(empty) > 1 else "it")
    elif empty:
        raise DataError(f"{where}: class{'es' if len(empty) > 1 else ''} {_preview(empty)} "
                        f"{'have' if len(empty) > 1 else 'has'} no image; every class needs training rows "
                        f"(integer labels are the indices 0..{len(items.class_names) - 1}: relabel them, or give "
                        f"data.class_names)")


def _preview(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")
