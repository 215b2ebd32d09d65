"""The [data] table's keys: where a recipe's labelled training images are, and how their labels
are read (a CSV, a class-per-folder tree, a file-name pattern, the mask competition's folder)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hierclf.config.keys import setting


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled training images are."""

    csv: str = setting("", "CSV with one row per image: id, label and optionally a group column.", path=True)
    images: str = setting("", "Folder holding the CSV's images (default: the folder named like the CSV beside it, "
                           "train/ for train.csv, else the CSV's own folder); with pattern, the folder whose "
                           "images it labels.", path=True)
    pattern: str = setting("", "Labels from file names, instead of csv: a regular expression matched against each "
                            "image's whole path under data.images (/-separated). Its named groups give the label "
                            "(named as label_column), the fold group (as group_column: the person) or an "
                            "attribute each (the heads'): '(?P<age>\\d+)_(?P<gender>[01])_\\d+_.*\\.jpg'.")
    pattern_values: dict[str, dict[str, str]] = setting(
        {}, "pattern: per group, the value each matched text stands for: { gender = { \"0\" = \"male\", \"1\" = "
            "\"female\" } } (matched exactly, else ignoring case).")
    pattern_bins: dict[str, tuple[float, ...]] = setting(
        {}, "pattern: per group, numbers binned at these bounds: { age = [30, 60] } is <30, 30-59, >=60.")
    pattern_unmatched: Literal["error", "skip"] = setting("error", "pattern: images it does not match stop the command "
                                                                "(error, naming them) or are left out and counted "
                                                                "(skip, as children left out of an adults' set).")
    folder: str = setting("", "A class-per-folder tree (folder/CLASS/IMAGE), instead of csv.", path=True)
    mask_images: str = setting(
        "", "The face-mask competition's folder, instead of csv: <person-id>_<gender>_<race>_<age>/"
            "{mask1..mask5,incorrect_mask,normal}.<ext>. Rows get mask, gender and age (binned by age_bounds); the "
            "person id is the fold group.", path=True)
    age_bounds: tuple[int, ...] = setting((30, 60), "mask_images: the ages where a new age bin starts "
                                                 "(30, 60: <30, 30–59, ≥60).")
    id_column: str = setting("id", "CSV column holding the image id: a file name, with or without extension.")
    ids_outside: bool = setting(False, "Let the CSV's ids leave the image folder (an absolute path, or one climbing "
                                    "out with ..); refused by default, naming the line.")
    label_column: str = setting("label", "CSV column (or pattern group) holding the label: a class index or a class "
                                      "name.")
    group_column: str = setting("group", "CSV column (or pattern group) whose rows must stay on one side of every "
                                         "split (augmented copies, photos of one person). Used when present.")
    class_names: tuple[str, ...] = setting((), "Class names in index order. Default: the label values "
                                            "(sorted names, or 0..max for integer labels).")

    @property
    def source(self) -> str:
        """The file or folder the rows come from, as messages name it."""
        return self.csv or self.folder or self.mask_images or self.images or "the rows"
