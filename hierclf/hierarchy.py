"""How fine labels map to the coarse stage's targets, and back.

A `GroupHierarchy` partitions the classes: each group of confusable classes becomes one
coarse class; every other class stays a coarse class of its own. With no groups the coarse
stage is the flat classifier, so flat and hierarchical runs share one code path.

A `FactorHierarchy` reads each class as a combination of attributes (mask × gender × age):
the label is the mixed-radix number of the attribute values, and the coarse stage predicts
every attribute with a head of its own.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence, Union

import numpy as np

from hierclf.errors import RecipeError, RunError


def _folder_name(name: str) -> str:
    """A name as a folder name (class names may hold '/', as 'T-shirt/top')."""
    return re.sub(r"[^\w.+-]+", "_", name).strip("._") or "group"


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[int, ...]

    @property
    def folder(self) -> str:
        return _folder_name(self.name)


@dataclass(frozen=True)
class GroupHierarchy:
    """Classes, and the groups the coarse stage merges (each group listed by class index)."""

    class_names: tuple[str, ...]
    groups: tuple[Group, ...] = ()

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for group in self.groups:
            if len(group.members) < 2:
                raise RecipeError(f"hierarchy group {group.name!r} has {len(group.members)} class; "
                                  f"a group needs at least 2")
            for member in group.members:
                if not 0 <= member < len(self.class_names):
                    raise RecipeError(f"hierarchy group {group.name!r}: class index {member} is out of "
                                      f"range 0..{len(self.class_names) - 1}")
                if member in seen:
                    raise RecipeError(f"hierarchy: class {self.class_names[member]!r} is in two groups, "
                                      f"{seen[member]!r} and {group.name!r}")
                seen[member] = group.name
        names = [group.name for group in self.groups]
        if len(set(names)) != len(names):
            raise RecipeError(f"hierarchy: group names must differ, got {names}")
        folders = [group.folder for group in self.groups]
        if len(set(folders)) != len(folders):
            raise RecipeError(f"hierarchy: group names {names} make the same folder names; rename one")

    @classmethod
    def from_config(cls, groups: Sequence[Sequence[int | str]], group_names: Sequence[str],
                    class_names: Sequence[str]) -> "GroupHierarchy":
        """Groups given by class index or class name, as a recipe writes them."""
        index_of = {name: index for index, name in enumerate(class_names)}
        built = []
        for position, group in enumerate(groups):
            members = []
            for member in group:
                if isinstance(member, str):
                    if member not in index_of:
                        raise RecipeError(f"hierarchy.groups: unknown class {member!r}; classes are "
                                          f"{', '.join(class_names)}")
                    member = index_of[member]
                members.append(member)
            if group_names:
                name = group_names[position]
            else:
                name = "+".join(class_names[m] if 0 <= m < len(class_names) else str(m) for m in members)
            built.append(Group(name=name, members=tuple(members)))
        return cls(class_names=tuple(class_names), groups=tuple(built))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_flat(self) -> bool:
        return not self.groups

    # The maps below are derived from the frozen fields, so each is computed once per hierarchy.

    @cached_property
    def fine_to_coarse(self) -> np.ndarray:
        """Coarse class of each fine class (read-only). A group sits where its first member would."""
        group_of = {member: group for group in self.groups for member in group.members}
        coarse_of = np.empty(self.num_classes, dtype=np.int64)
        placed: dict[str, int] = {}
        next_index = 0
        for fine in range(self.num_classes):
            group = group_of.get(fine)
            if group is None:
                coarse_of[fine] = next_index
                next_index += 1
            elif group.name in placed:
                coarse_of[fine] = placed[group.name]
            else:
                placed[group.name] = coarse_of[fine] = next_index
                next_index += 1
        coarse_of.flags.writeable = False
        return coarse_of

    @cached_property
    def coarse_to_fine(self) -> tuple[tuple[int, ...], ...]:
        """The fine classes of each coarse class: one for a singleton, the members for a group."""
        return tuple(tuple(int(f) for f in np.flatnonzero(self.fine_to_coarse == c))
                     for c in range(int(self.fine_to_coarse.max()) + 1))

    @cached_property
    def coarse_names(self) -> tuple[str, ...]:
        group_of = {member: group.name for group in self.groups for member in group.members}
        return tuple(group_of.get(fines[0], self.class_names[fines[0]]) for fines in self.coarse_to_fine)

    @cached_property
    def coarse_to_first_fine(self) -> np.ndarray:
        """A fine class of each coarse class: the class itself for a singleton, the first member for a group."""
        return np.asarray([fines[0] for fines in self.coarse_to_fine], dtype=np.int64)

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def coarse_index(self, group: Group) -> int:
        """The coarse class a group became."""
        return int(self.fine_to_coarse[group.members[0]])

    def coarse_targets(self, labels: np.ndarray) -> np.ndarray:
        """Coarse-stage target of each fine label."""
        return self.fine_to_coarse[np.asarray(labels, dtype=np.int64)]

    def specialist_parts(self, configured: Sequence[str] = ()) -> tuple[Group, ...]:
        """What gets a specialist: every group."""
        return self.groups

    def specialist_targets(self, part: Group, labels: np.ndarray, outside: int) -> np.ndarray:
        """A group specialist's target of each row: the class's place among the members, or
        `outside` for the rows of other classes."""
        targets = np.full(len(labels), outside, dtype=np.int64)
        for position, member in enumerate(part.members):
            targets[labels == member] = position
        return targets

    def specialist_classes(self, part: Group) -> tuple[str, ...]:
        return tuple(self.class_names[m] for m in part.members)

    def to_json(self) -> str:
        payload: dict[str, Any] = {
            "kind": "groups",
            "class_names": list(self.class_names),
            "groups": [{"name": g.name, "members": list(g.members)} for g in self.groups],
            "coarse_names": list(self.coarse_names),
            "fine_to_coarse": self.fine_to_coarse.tolist(),
            "coarse_to_fine": [list(fines) for fines in self.coarse_to_fine],
        }
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "hierarchy.json") -> "GroupHierarchy":
        try:
            payload = json.loads(text)
            return cls(class_names=tuple(payload["class_names"]),
                       groups=tuple(Group(g["name"], tuple(g["members"])) for g in payload["groups"]))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{source} is not a hierarchy file: {error}") from None


def encode_factors(values: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Joint labels from attribute values (N×H, one column per head, first head most significant):
    mask 2, gender 1, age 0 with sizes (3, 2, 3) is 2·6 + 1·3 + 0 = 15."""
    values = np.asarray(values, dtype=np.int64).reshape(-1, len(sizes))
    return np.ravel_multi_index(tuple(values.T), tuple(sizes)).astype(np.int64)


def decode_factors(labels: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Attribute values (N×H) of joint labels; the inverse of `encode_factors`."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.stack(np.unravel_index(labels, tuple(sizes)), axis=1).astype(np.int64).reshape(len(labels), len(sizes))


def split_heads(probs: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """The blocks of an output holding each head's probabilities side by side, in head order."""
    return np.split(probs, np.cumsum(sizes)[:-1], axis=1)


@dataclass(frozen=True)
class Head:
    """One attribute: its name and the names of its values, in index order."""

    name: str
    values: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.values)

    @property
    def folder(self) -> str:
        return _folder_name(self.name)


@dataclass(frozen=True)
class FactorHierarchy:
    """Classes that are combinations of attributes, one coarse head per attribute.

    `separate` trains one model per attribute instead of one backbone with several heads."""

    heads: tuple[Head, ...]
    separate: bool = False

    def __post_init__(self) -> None:
        if not self.heads:
            raise RecipeError("hierarchy.heads: give at least one head, e.g. { mask = 3, gender = 2, age = 3 }")
        names = [head.name for head in self.heads]
        if len(set(names)) != len(names):
            raise RecipeError(f"hierarchy.heads: head names must differ, got {names}")
        if len({head.folder for head in self.heads}) != len(names):
            raise RecipeError(f"hierarchy.heads: head names {names} make the same folder names; rename one")
        for head in self.heads:
            if head.size < 2:
                raise RecipeError(f"hierarchy.heads.{head.name}: a head needs at least 2 values, got {head.size}")
            if len(set(head.values)) != head.size:
                raise RecipeError(f"hierarchy.heads.{head.name}: value names must differ, got {list(head.values)}")

    @classmethod
    def from_config(cls, heads: Mapping[str, Union[int, Sequence[str]]], separate: bool = False) -> "FactorHierarchy":
        """Heads as a recipe writes them: a size (values named 0, 1, …) or the list of value names."""
        built = []
        for name, spec in heads.items():
            values = tuple(str(v) for v in range(spec)) if isinstance(spec, int) else tuple(spec)
            built.append(Head(name=name, values=values))
        return cls(heads=tuple(built), separate=separate)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(head.size for head in self.heads)

    @property
    def shapes(self) -> tuple[tuple[str, int], ...]:
        """(name, size) of each head: what models, losses and metrics need to know of it."""
        return tuple((head.name, head.size) for head in self.heads)

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.sizes))

    @property
    def is_flat(self) -> bool:
        return False

    @property
    def groups(self) -> tuple[Group, ...]:
        """No groups: every class is reached through the heads."""
        return ()

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        """Joint class names: the value names joined by '/' (wear/male/<30), or the joint index
        when every head's values are unnamed."""
        named = any(head.values != tuple(str(v) for v in range(head.size)) for head in self.heads)
        if not named:
            return tuple(str(label) for label in range(self.num_classes))
        values = decode_factors(np.arange(self.num_classes), self.sizes)
        return tuple("/".join(head.values[v] for head, v in zip(self.heads, row)) for row in values)

    @cached_property
    def coarse_names(self) -> tuple[str, ...]:
        """The coarse model's outputs, head after head: mask=wear, mask=incorrect, …"""
        return tuple(f"{head.name}={value}" for head in self.heads for value in head.values)

    def head(self, name: str) -> Head:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)

    def encode(self, values: np.ndarray) -> np.ndarray:
        return encode_factors(values, self.sizes)

    def decode(self, labels: np.ndarray) -> np.ndarray:
        return decode_factors(labels, self.sizes)

    def coarse_targets(self, labels: np.ndarray) -> np.ndarray:
        """Each row's value of every head (N×H): the multi-head model's targets."""
        return self.decode(labels)

    def specialist_parts(self, configured: Sequence[str] = ()) -> tuple[Head, ...]:
        """What gets a specialist: the heads named in `configured` (the recipe's [fine.<head>] tables)."""
        return tuple(head for head in self.heads if head.name in configured)

    def specialist_targets(self, part: Head, labels: np.ndarray, outside: int) -> np.ndarray:
        """A head specialist learns its attribute from every row."""
        return self.decode(labels)[:, self.heads.index(part)]

    def specialist_classes(self, part: Head) -> tuple[str, ...]:
        return part.values

    def split(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """The coarse output (heads side by side) as one probability block per head."""
        return dict(zip((head.name for head in self.heads), split_heads(probs, self.sizes)))

    def joint_probs(self, head_probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(class) = Π_h P_h(value of class for head h): the heads' outer product, in label order.
        Rows sum to 1 when each head's rows do."""
        joint = None
        for head in self.heads:
            probs = np.asarray(head_probs[head.name], dtype=np.float64)
            joint = probs if joint is None else (joint[:, :, None] * probs[:, None, :]).reshape(len(probs), -1)
        return joint

    def to_json(self) -> str:
        payload = {"kind": "factors", "class_names": list(self.class_names), "separate": self.separate,
                   "heads": [{"name": head.name, "values": list(head.values)} for head in self.heads]}
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "hierarchy.json") -> "FactorHierarchy":
        try:
            payload = json.loads(text)
            return cls(heads=tuple(Head(h["name"], tuple(h["values"])) for h in payload["heads"]),
                       separate=bool(payload.get("separate", False)))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{source} is not a hierarchy file: {error}") from None


Hierarchy = Union[GroupHierarchy, FactorHierarchy]


def build_hierarchy(config: Any, class_names: Sequence[str]) -> Hierarchy:
    """The hierarchy a recipe's [hierarchy] describes, over the data's classes."""
    if config.heads:
        factors = FactorHierarchy.from_config(config.heads, config.separate)
        if tuple(class_names) != factors.class_names:
            raise RecipeError(f"hierarchy.heads make {factors.num_classes} classes "
                              f"({', '.join(factors.class_names[:3])}, …) but the data has {len(class_names)} "
                              f"({', '.join(class_names[:3])}, …)")
        return factors
    return GroupHierarchy.from_config(config.groups, config.group_names, class_names)


def hierarchy_from_json(text: str, source: str = "hierarchy.json") -> Hierarchy:
    """Read hierarchy.json, whichever kind it holds."""
    try:
        kind = json.loads(text).get("kind", "groups")
    except (ValueError, AttributeError) as error:
        raise RunError(f"{source} is not a hierarchy file: {error}") from None
    return FactorHierarchy.from_json(text, source) if kind == "factors" else GroupHierarchy.from_json(text, source)


@dataclass(frozen=True)
class SuggestedGroup:
    members: tuple[int, ...]
    error_share: float
    """Share of all off-diagonal (error) counts that fall between members of the group."""
    confusion_rate: float
    """Mean symmetrised confusion rate between pairs of members."""


def confusion_affinity(matrix: np.ndarray) -> np.ndarray:
    """How often two classes are taken for each other: each row normalised by its class's count,
    the diagonal removed, then symmetrised."""
    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    np.fill_diagonal(rates, 0.0)
    return (rates + rates.T) / 2


def suggest_groups(matrix: np.ndarray, max_groups: int = 3, min_confusion: float = 0.02) -> list[SuggestedGroup]:
    """Groups of classes a flat model confuses, from its out-of-fold confusion matrix.

    Average-linkage agglomerative clustering (scikit-learn) on 1 − affinity merges classes while
    their mean mutual confusion rate is at least `min_confusion`; classes no other class is
    confused with stay alone, which a spectral partition into K clusters would not allow. The
    groups holding most of the errors come first."""
    from sklearn.cluster import AgglomerativeClustering

    matrix = np.asarray(matrix, dtype=np.float64)
    affinity = confusion_affinity(matrix)
    if len(matrix) < 2 or affinity.max() < min_confusion:
        return []
    distance = 1.0 - affinity
    np.fill_diagonal(distance, 0.0)
    clusters = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                       distance_threshold=1.0 - min_confusion).fit_predict(distance)
    errors = matrix.copy()
    np.fill_diagonal(errors, 0.0)
    total = max(errors.sum(), 1.0)
    found = []
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        if len(members) < 2:
            continue
        inside = errors[np.ix_(members, members)]
        pairs = affinity[np.ix_(members, members)][np.triu_indices(len(members), 1)]
        found.append(SuggestedGroup(members=tuple(int(m) for m in members), error_share=float(inside.sum() / total),
                                    confusion_rate=float(pairs.mean())))
    found.sort(key=lambda group: -group.error_share)
    return found[:max_groups]
