"""A hierarchy that merges confusable classes: each group becomes one coarse class, every other
class stays a coarse class of its own, and each group gets a specialist that splits it. With no
groups the coarse stage is the flat classifier, so flat and hierarchical runs share one path.

With `flat_coarse` the coarse stage is a flat run's model over every class (hierarchy.coarse_run):
it is not retrained, a group's probability is the sum of its members', and its distribution
within a group is the coarse stage's version of that group's term (for the blend combiner)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence

import numpy as np

from hierclf.errors import RecipeError, RunError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.hierarchy.protocol import Term
from hierclf.hierarchy.sections import GroupsSection
from hierclf.hierarchy.stage import NOT_IN_STAGE, Stage, folder_name, in_stage, single_loss
from hierclf.metrics import scores
from hierclf.readback import parse_json
from hierclf.recipe.schema import Recipe


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[int, ...]

    @property
    def folder(self) -> str:
        return folder_name(self.name)


@dataclass(frozen=True)
class GroupHierarchy:
    """Classes, and the groups the coarse stage merges (each group listed by class index)."""

    class_names: tuple[str, ...]
    groups: tuple[Group, ...] = ()
    flat_coarse: bool = False

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
        if len({group.folder for group in self.groups}) != len(names):
            raise RecipeError(f"hierarchy: group names {names} make the same folder names; rename one")
        if self.flat_coarse and not self.groups:
            raise RecipeError("hierarchy.coarse_run: a flat run as the coarse stage needs groups for specialists "
                              "to refine; set hierarchy.groups")

    @classmethod
    def from_config(cls, groups: Sequence[Sequence[int | str]], group_names: Sequence[str],
                    class_names: Sequence[str], flat_coarse: bool = False) -> "GroupHierarchy":
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
        return cls(class_names=tuple(class_names), groups=tuple(built), flat_coarse=flat_coarse)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_flat(self) -> bool:
        return not self.groups

    part_noun = "group"

    @property
    def parts(self) -> tuple[Group, ...]:
        return self.groups

    def specialist_parts(self, configured: Sequence[str] = ()) -> tuple[Group, ...]:
        """Every group gets a specialist."""
        return self.groups

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    # --- the maps below are derived from the frozen fields, so each is computed once

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
    def coarse_names(self) -> tuple[str, ...]:
        group_of = {member: group.name for group in self.groups for member in group.members}
        firsts = [int(np.flatnonzero(self.fine_to_coarse == c)[0]) for c in range(int(self.fine_to_coarse.max()) + 1)]
        return tuple(group_of.get(fine, self.class_names[fine]) for fine in firsts)

    @property
    def coarse_layout(self) -> OutputLayout:
        return OutputLayout.single(self.class_names if self.flat_coarse else self.coarse_names)

    def coarse_index(self, group: Group) -> int:
        """The coarse class a group became."""
        return int(self.fine_to_coarse[group.members[0]])

    # --- stages

    def coarse_targets(self, labels: np.ndarray) -> np.ndarray:
        """Coarse-stage target of each fine label (N×1): its coarse class, or with a flat coarse
        stage the label itself."""
        labels = np.asarray(labels, dtype=np.int64)
        return (labels if self.flat_coarse else self.fine_to_coarse[labels])[:, None]

    def specialist_targets(self, part: Group, labels: np.ndarray) -> np.ndarray:
        """A group specialist's target of each row (N×1): the class's place among the members, or
        NOT_IN_STAGE for the rows of other classes."""
        targets = np.full((len(labels), 1), NOT_IN_STAGE, dtype=np.int64)
        for position, member in enumerate(part.members):
            targets[labels == member, 0] = position
        return targets

    def coarse_stage(self, recipe: Recipe) -> Stage:
        return Stage(name="coarse", key="coarse", config=recipe.coarse, layout=self.coarse_layout,
                     losses=(single_loss(recipe.coarse),), loss_keys=("coarse",), targets=self.coarse_targets)

    def specialist_stage(self, part: Group, recipe: Recipe) -> Stage:
        config = recipe.specialist(part.name)
        return Stage(name=f"fine/{part.folder}", key=f"fine.{part.name}", config=config,
                     layout=OutputLayout.single(self.class_names[m] for m in part.members),
                     losses=(single_loss(config),), loss_keys=(f"fine.{part.name}",),
                     targets=lambda labels: self.specialist_targets(part, labels),
                     coarse_rows=part.members if self.flat_coarse else ())

    # --- the product rule: P(y) = P(group of y) · P(y | group)

    @cached_property
    def terms(self) -> tuple[Term, ...]:
        """The router (each class's coarse class), then each group's term (each member's place)."""
        router = Term(part=None, columns=self.fine_to_coarse, from_coarse=True)
        own = []
        for group in self.groups:
            columns = np.full(self.num_classes, -1, dtype=np.int64)
            columns[list(group.members)] = np.arange(len(group.members))
            own.append(Term(part=group.name, columns=columns, from_coarse=self.flat_coarse))
        return (router, *own)

    def group_probs(self, coarse_probs: np.ndarray) -> np.ndarray:
        """The coarse stage's probability of each coarse class (a group or a singleton): its own
        outputs, or with a flat coarse stage the flat probabilities summed over each group."""
        if not self.flat_coarse:
            return coarse_probs
        summed = np.zeros((len(coarse_probs), int(self.fine_to_coarse.max()) + 1), dtype=np.float64)
        np.add.at(summed.T, self.fine_to_coarse, np.asarray(coarse_probs, dtype=np.float64).T)
        return summed

    def coarse_terms(self, coarse_probs: np.ndarray) -> list[np.ndarray | None]:
        """The coarse classes' probabilities; with a flat coarse stage also its distribution within
        each group, given the group."""
        within: list[np.ndarray | None] = []
        for group in self.groups:
            if not self.flat_coarse:
                within.append(None)
                continue
            members = np.asarray(coarse_probs, dtype=np.float64)[:, list(group.members)]
            within.append(members / np.maximum(members.sum(1, keepdims=True), 1e-12))
        return [self.group_probs(coarse_probs), *within]

    # --- what only groups report

    def trace(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The coarse decision and its confidence; where that decision is a group, its specialist's
        decision and confidence (empty where the specialist did not run)."""
        coarse_probs = self.group_probs(coarse_probs)
        top = coarse_probs.argmax(1)
        names = np.asarray(self.coarse_names, dtype=object)
        specialist = np.full(len(top), "", dtype=object)
        specialist_label = np.full(len(top), "", dtype=object)
        specialist_confidence = np.full(len(top), np.nan)
        for group in self.groups:
            rows = np.flatnonzero(top == self.coarse_index(group))
            probs = specialist_probs.get(group.name)
            if probs is None or len(rows) == 0:
                continue
            rows = rows[~np.isnan(probs[rows]).any(1)]
            specialist[rows] = group.name
            specialist_label[rows] = [self.class_names[group.members[i]] for i in probs[rows].argmax(1)]
            specialist_confidence[rows] = probs[rows].max(1)
        return {"coarse": names[top], "coarse_confidence": coarse_probs.max(1), "specialist": specialist,
                "specialist_label": specialist_label, "specialist_confidence": specialist_confidence}

    def stage_report(self, labels: np.ndarray, coarse_probs: np.ndarray,
                     specialist_probs: Mapping[str, np.ndarray], fine_probs: np.ndarray) -> GroupsSection:
        """The groups, the coarse stage's own scores, how often it routes to the right group (its
        accuracy: it picks the right group or class, an upper bound of the routed pipeline), and
        each specialist's scores on its own group's rows."""
        coarse_top = self.group_probs(coarse_probs).argmax(1)
        groups = [{"name": g.name, "classes": [self.class_names[m] for m in g.members]} for g in self.groups]
        coarse = scores(self.fine_to_coarse[labels], coarse_top, len(self.coarse_names))
        if not self.groups:
            return GroupsSection(groups, coarse)
        per_group = {g.name: float((coarse_top[np.isin(labels, g.members)] == self.coarse_index(g)).mean())
                     for g in self.groups}
        routing = {"accuracy": coarse["accuracy"], "per_group": per_group}
        specialists = {}
        for group in self.groups:
            if group.name in specialist_probs:
                targets = self.specialist_targets(group, labels)
                rows = in_stage(targets)
                specialists[group.name] = scores(targets[rows, 0], specialist_probs[group.name][rows].argmax(1),
                                                 len(group.members))["macro_f1"]
        return GroupsSection(groups, coarse, routing, specialists)

    @property
    def label_heads(self) -> tuple:
        """A class label has no attributes to give column by column."""
        return ()

    def describe(self) -> str:
        if not self.groups:
            return f"no groups ({self.num_classes} classes)"
        return "groups " + ", ".join(group.name for group in self.groups) + (
            " over a flat coarse run" if self.flat_coarse else "")

    def to_json(self) -> str:
        coarse_to_fine = [np.flatnonzero(self.fine_to_coarse == c).tolist()
                          for c in range(int(self.fine_to_coarse.max()) + 1)]
        payload: dict[str, Any] = {
            "kind": "groups", "class_names": list(self.class_names),
            "groups": [{"name": g.name, "members": list(g.members)} for g in self.groups],
            "flat_coarse": self.flat_coarse, "coarse_names": list(self.coarse_names),
            "fine_to_coarse": self.fine_to_coarse.tolist(), "coarse_to_fine": coarse_to_fine}
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "hierarchy.json") -> "GroupHierarchy":
        try:
            payload = parse_json(text)
            return cls(class_names=tuple(payload["class_names"]),
                       groups=tuple(Group(g["name"], tuple(g["members"])) for g in payload["groups"]),
                       flat_coarse=bool(payload.get("flat_coarse", False)))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{source} is not a hierarchy file: {error}") from None
