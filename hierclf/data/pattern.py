"""Labels read from file paths: a regular expression over each image's path under a folder, whose
named groups give the label, the fold group, or one attribute each (UTKFace's
`AGE_GENDER_RACE_DATE.jpg`, the mask competition's `<person>_<gender>_<race>_<age>/mask1.jpg`,
Oxford Pets' `Breed_123.jpg`). A matched text becomes a value as it is, through a map (`0` →
`male`), or by numeric bins (`age` = [30, 60]: <30, 30–59, ≥60). Every file the pattern does not
match is named, or skipped on purpose and counted; nothing is dropped in silence.
"""
from __future__ import annotations

import itertools
import math
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import regex

from hierclf.data.images import images_under
from hierclf.data.items import Items
from hierclf.data.labels import Attribute, encode_factors, joint_class_names
from hierclf.errors import DataError, RecipeError

log = logging.getLogger(__name__)


MATCH_SECONDS = 1.0
"""The longest one file name may take to match: a name matches in microseconds, unless the
pattern backtracks without end."""


@dataclass(frozen=True)
class Pattern:
    """How a folder's paths give rows their labels (see the module's docstring).

    `regex` is matched against each image's whole path under the folder, `/`-separated; its
    group named `label` gives the label, the one named `group` the fold group, and every other
    named group an attribute. `values` maps a group's matched texts to value names, `bins` cuts a
    group's numbers at its bounds. `attributes` are the attributes when the recipe has no heads (a
    preset's own); `where` names the pattern in messages, `layout` shows a path that matches."""

    regex: str
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    bins: Mapping[str, Sequence[float]] = field(default_factory=dict)
    skip_unmatched: bool = False
    label: str = "label"
    group: str = "group"
    attributes: tuple[Attribute, ...] = ()
    where: str = "data.pattern"
    layout: str = ""

    def compiled(self) -> regex.Pattern:
        """The pattern compiled by the `regex` package (re's syntax), whose matching `match`
        bounds in time."""
        try:
            return regex.compile(self.regex)
        except regex.error as error:
            raise RecipeError(f"{self.where} = {self.regex!r} is not a regular expression: {error}") from None

    def match(self, compiled: regex.Pattern, relative: str) -> regex.Match | None:
        """`relative` matched whole, within MATCH_SECONDS: a pattern with nested quantifiers
        ((\\w+_?)+) can backtrack for hours on one long name, so that name and the pattern are
        named instead."""
        try:
            return compiled.fullmatch(relative, timeout=MATCH_SECONDS)
        except TimeoutError:
            raise RecipeError(f"{self.where} = {self.regex!r}: matching {relative!r} took over {MATCH_SECONDS:g} s, "
                              f"backtracking without end (a repeat inside a repeat, as (\\w+_?)+, does on a name "
                              f"it almost matches); write the pattern without nested repeats") from None

    def attribute_groups(self) -> list[str]:
        """The named groups that are attributes, in the pattern's order."""
        return [name for name in self.compiled().groupindex if name not in (self.label, self.group)]


def read_pattern_folder(root: Path, pattern: Pattern, attributes: Sequence[Attribute] = (),
                        class_names: Sequence[str] | None = None) -> Items:
    """Every image under `root` (hidden files and folders left out), labelled by `pattern`: by its
    label group (names as `class_names`, else the sorted values), or by its attribute groups,
    which are the recipe's heads (`attributes`) or else the pattern's own, the label their joint
    class. The fold group is the group named so, when the pattern has one."""
    compiled = pattern.compiled()
    if pattern.label not in compiled.groupindex:
        _check_groups(pattern, attributes)
    if not root.is_dir():
        raise DataError(f"{pattern.where}: folder {root} does not exist")
    found, unmatched = [], []
    for path in images_under(root):
        relative = path.relative_to(root).as_posix()
        match = pattern.match(compiled, relative)
        if match is None:
            unmatched.append(relative)
        else:
            found.append((relative, str(path), match.groupdict()))
    _report_unmatched(root, pattern, unmatched, len(found))
    for relative, _, groups in found:
        empty = [name for name, text in groups.items() if not text]
        if empty:
            raise DataError(f"{root / relative}: {pattern.where} matched nothing for its group {empty[0]!r}")
    ids = np.asarray([relative for relative, _, _ in found])
    paths = np.asarray([path for _, path, _ in found])
    groups = np.asarray([g[pattern.group] for _, _, g in found]) if pattern.group in compiled.groupindex else None
    texts = [[g[name] for name in compiled.groupindex] for _, _, g in found]
    by_group = dict(zip(compiled.groupindex, zip(*texts))) if texts else {}
    if pattern.label in compiled.groupindex:
        if pattern.attribute_groups():
            raise RecipeError(f"{pattern.where}: a group named {pattern.label!r} gives the label, so "
                              f"{', '.join(pattern.attribute_groups())} cannot be attributes; name them (?:…) or "
                              f"drop the label group")
        names = tuple(class_names) if class_names else tuple(sorted(set(_mapped(pattern, pattern.label, text)
                                                                       for text in by_group[pattern.label])))
        labels = np.asarray([_index(pattern, pattern.label, text, names, root / relative)
                             for text, (relative, _, _) in zip(by_group[pattern.label], found)], dtype=np.int64)
        return Items(ids=ids, labels=labels, class_names=names, paths=paths, groups=groups)
    chosen = _attributes(pattern, attributes, by_group)
    if class_names and not attributes:  # a flat recipe naming the joint classes, in an order of its own
        chosen = _ordered_as(class_names, chosen, pattern.where)
    lookup = [_lookup_values(pattern, attribute) for attribute in chosen]
    values = np.asarray([[_index(pattern, attribute.name, groups[attribute.name], names, root / relative)
                          for attribute, names in zip(chosen, lookup)] for relative, _, groups in found],
                        dtype=np.int64)
    labels = encode_factors(values.reshape(len(found), len(chosen)), [attribute.size for attribute in chosen])
    names = joint_class_names(chosen)
    if class_names and not attributes:
        position = {name: index for index, name in enumerate(class_names)}
        labels, names = np.asarray([position[names[label]] for label in labels], dtype=np.int64), tuple(class_names)
    return Items(ids=ids, labels=labels, class_names=names, paths=paths, groups=groups)


def _ordered_as(class_names: Sequence[str], attributes: tuple[Attribute, ...], where: str) -> tuple[Attribute, ...]:
    """The attributes in the order whose joint names (values joined by /) are `class_names`, in any
    order of theirs: a flat recipe may name UTKFace's age_gender classes male/<30."""
    for order in itertools.permutations(attributes):
        if set(joint_class_names(order)) == set(class_names) and len(class_names) == len(set(class_names)):
            return order
    expected = ", ".join(joint_class_names(attributes)[:4])
    raise RecipeError(f"data.class_names names other classes than the joint ones of {where}'s groups "
                      f"{', '.join(a.name for a in attributes)} ({expected}, …, in any order of the groups)")


def _report_unmatched(root: Path, pattern: Pattern, unmatched: list[str], matched: int) -> None:
    if not unmatched:
        if not matched:
            raise DataError(f"{pattern.where}: {root} holds no images")
        return
    shown = ", ".join(unmatched[:3]) + (f" and {len(unmatched) - 3} more" if len(unmatched) > 3 else "")
    layout = f" ({pattern.layout})" if pattern.layout else ""
    if pattern.skip_unmatched and matched:
        log.warning("%s: %d of %d images under %s do not match%s and are left out: %s", pattern.where,
                    len(unmatched), len(unmatched) + matched, root, layout, shown)
        return
    skip = " (data.pattern_unmatched = \"skip\" leaves them out on purpose)" if pattern.where == "data.pattern" else ""
    raise DataError(f"{pattern.where}: {len(unmatched)} of {len(unmatched) + matched} images under {root} do not "
                    f"match{layout}: {shown}{skip}")


def _check_groups(pattern: Pattern, heads: Sequence[Attribute]) -> None:
    """Before any file is read: the pattern has attribute groups, each a head's when the recipe
    has heads, every head has its group, and each head has as many values as its bins."""
    groups = pattern.attribute_groups()
    if not groups:
        raise RecipeError(f"{pattern.where}: no named group gives the label ({pattern.label!r}) or an attribute; "
                          f"name one, as (?P<{pattern.label}>[^_]+)_.*")
    known = tuple(heads) or pattern.attributes
    names = {attribute.name for attribute in known}
    for name in groups if known else ():
        if name not in names:
            raise RecipeError(f"{pattern.where}: its group {name!r} names no attribute; the heads are "
                              f"{', '.join(sorted(names))} (make it an unnamed group (?:…))")
    for attribute in known:
        if attribute.name not in groups:
            raise RecipeError(f"{pattern.where}: the head {attribute.name!r} has no group in the pattern; add "
                              f"(?P<{attribute.name}>…)")
        bounds = pattern.bins.get(attribute.name)
        if bounds is not None and len(bounds) + 1 != attribute.size:
            raise RecipeError(f"data.pattern_bins.{attribute.name} cuts {len(bounds) + 1} bins, but the head "
                              f"{attribute.name!r} has {attribute.size} values")


def _attributes(pattern: Pattern, heads: Sequence[Attribute], by_group: dict[str, tuple[str, ...]]
                ) -> tuple[Attribute, ...]:
    """The attributes labels combine (`_check_groups` has checked them): the recipe's heads, else
    the preset's, else the pattern's groups in order, each with the values its map, its bins or
    the data give it."""
    return tuple(heads) or pattern.attributes or tuple(
        Attribute(name, _value_names(pattern, name, by_group.get(name, ()))) for name in pattern.attribute_groups())


def _value_names(pattern: Pattern, name: str, texts: Sequence[str]) -> tuple[str, ...]:
    """An attribute's values when no head names them: its bins' names, its map's values in order,
    or the distinct texts, sorted."""
    if name in pattern.bins:
        return bin_names(pattern.bins[name])
    if name in pattern.values:
        return tuple(dict.fromkeys(pattern.values[name].values()))
    return tuple(sorted(set(texts)))


def bin_names(bounds: Sequence[float]) -> tuple[str, ...]:
    """The bins' names: <30, 30-59, >=60 for the whole bounds 30, 60; <0.5, 0.5-1, >=1 otherwise."""
    text = [f"{bound:g}" for bound in bounds]
    if all(float(bound).is_integer() for bound in bounds):
        middle = [f"{int(low)}-{int(high) - 1}" for low, high in zip(bounds, bounds[1:])]
    else:
        middle = [f"{low}-{high}" for low, high in zip(text, text[1:])]
    return (f"<{text[0]}", *middle, f">={text[-1]}")


def _lookup_values(pattern: Pattern, attribute: Attribute) -> tuple[str, ...]:
    """The names a group's mapped texts are looked up in: the attribute's own, or, for a head whose
    values are unnamed (0, 1, …), the names the map or the preset gives them, by position."""
    unnamed = attribute.values == tuple(str(index) for index in range(attribute.size))
    preset = {known.name: known.values for known in pattern.attributes}
    if not unnamed or attribute.name in pattern.bins:
        return attribute.values
    if attribute.name in pattern.values:
        return tuple(dict.fromkeys(pattern.values[attribute.name].values()))
    return preset.get(attribute.name, attribute.values)


def _mapped(pattern: Pattern, name: str, text: str) -> str:
    """A group's text through its value map: exactly, else ignoring case; unmapped texts as they are."""
    mapping = pattern.values.get(name)
    if mapping is None:
        return text
    if text in mapping:
        return mapping[text]
    folded = {key.casefold(): value for key, value in mapping.items()}
    return folded.get(text.casefold(), text)


DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
"""A number as a file name writes one: digits, a decimal point, an exponent; never nan or inf."""


def _index(pattern: Pattern, name: str, text: str, values: Sequence[str], path: Path) -> int:
    """A group's text as the index of its value: its bin, its mapped name, or the text itself (a
    value's name, or its index when the values are unnamed 0, 1, …)."""
    bounds = pattern.bins.get(name)
    if bounds is not None:
        number = float(text) if DECIMAL.fullmatch(text.strip()) else math.nan  # float() also takes nan and inf
        if not math.isfinite(number):
            raise DataError(f"{path}: {pattern.where}'s group {name!r} matched {text!r}, not a finite decimal number "
                            f"to bin at {list(bounds)}")
        return int(np.searchsorted(np.asarray(bounds, dtype=float), number, side="right"))
    value = _mapped(pattern, name, text)
    if value in values:
        return list(values).index(value)
    mapped = f" (mapped from {text!r})" if value != text else ""
    own = name in pattern.values and pattern.where == "data.pattern"
    known = f"; data.pattern_values.{name} maps {', '.join(list(pattern.values[name])[:6])}" if own else ""
    raise DataError(f"{path}: {name} {value!r}{mapped} is not one of {', '.join(values)}{known}")
