"""How fine labels map to the stages of a run, and how the stages' outputs combine back.

Two kinds of hierarchy answer the same questions (the `Hierarchy` protocol), so nothing outside
this module tells them apart:

- A `GroupHierarchy` partitions the classes: each group of confusable classes becomes one coarse
  class, every other class stays a coarse class of its own, and each group gets a specialist
  that splits it. With no groups the coarse stage is the flat classifier, so flat and
  hierarchical runs share one code path.
- A `FactorHierarchy` reads each class as a combination of attributes (mask × gender × age):
  the label is the mixed-radix number of the attribute values, the coarse stage predicts every
  attribute with a head of its own, and a head may get a specialist that replaces it.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Protocol, Sequence, Union

import numpy as np

from hierclf.combine.combiners import Combined, SpecialistRunner, check_combiner_name
from hierclf.errors import RecipeError, RunError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.metrics import scores
from hierclf.recipe.schema import HierarchyConfig, Recipe
from hierclf.hierarchy.stage import NOT_IN_STAGE, Stage, single_loss


def _folder_name(name: str) -> str:
    """A name as a folder name (class names may hold '/', as 'T-shirt/top')."""
    return re.sub(r"[^\w.+-]+", "_", name).strip("._") or "group"


class Part(Protocol):
    """What a specialist refines: a group of classes, or an attribute head."""

    name: str

    @property
    def folder(self) -> str: ...


class Hierarchy(Protocol):
    """What every kind of hierarchy answers for itself."""

    @property
    def class_names(self) -> tuple[str, ...]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def is_flat(self) -> bool:
        """One stage, the fine classes themselves: nothing to refine, nothing to combine."""

    @property
    def part_noun(self) -> str:
        """What a specialist refines, in messages: "group" or "head"."""

    @property
    def parts(self) -> tuple[Part, ...]:
        """Everything a specialist could refine."""

    def specialist_parts(self, configured: Sequence[str] = ()) -> tuple[Part, ...]:
        """The parts that get a specialist, given the recipe's [fine.<name>] tables."""

    def coarse_stage(self, recipe: Recipe) -> Stage: ...

    def specialist_stage(self, part: Part, recipe: Recipe) -> Stage: ...

    @property
    def combiners(self) -> tuple[str, ...]:
        """The combiners (`hierclf.combine.combiners`) that apply, the preferred first."""

    def combiner_for(self, requested: str, where: str) -> str:
        """The combiner to use when `requested` is asked for; refuses one that cannot apply. `where`
        names the key or option that asked, with its value, for the message."""

    def product(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Fine-class probabilities from every stage's probabilities on every row."""

    def trace(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per row, each stage's decision and confidence, as columns of a predictions CSV."""

    def stage_report(self, labels: np.ndarray, coarse_probs: np.ndarray,
                     specialist_probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The out-of-fold sections of report.json that only this kind has."""

    @property
    def label_heads(self) -> tuple[Head, ...]:
        """The attributes an input CSV may give one column each instead of the label."""

    def describe(self) -> str:
        """What the hierarchy is, in a few words, for messages."""

    def to_json(self) -> str: ...


@dataclass(frozen=True)
class Group:
    name: str
    members: tuple[int, ...]

    @property
    def folder(self) -> str:
        return _folder_name(self.name)


@dataclass(frozen=True)
class GroupHierarchy:
    """Classes, and the groups the coarse stage merges (each group listed by class index).

    With `flat_coarse`, the coarse stage is a flat run's model over every class (hierarchy.coarse_run):
    it is not retrained, a group's probability is the sum of its members', and its distribution
    within a group stays available beside the specialist's (`within`, for the blend combiner)."""

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
        folders = [group.folder for group in self.groups]
        if len(set(folders)) != len(folders):
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

    @property
    def coarse_layout(self) -> OutputLayout:
        return OutputLayout.single(self.class_names if self.flat_coarse else self.coarse_names)

    def group_probs(self, coarse_probs: np.ndarray) -> np.ndarray:
        """The coarse stage's probability of each coarse class (a group or a singleton): its own
        outputs, or with a flat coarse stage the flat probabilities summed over each group."""
        if not self.flat_coarse:
            return coarse_probs
        summed = np.zeros((len(coarse_probs), len(self.coarse_to_fine)), dtype=np.float64)
        np.add.at(summed.T, self.fine_to_coarse, np.asarray(coarse_probs, dtype=np.float64).T)
        return summed

    def within(self, coarse_probs: np.ndarray, name: str) -> np.ndarray:
        """A flat coarse stage's distribution over group `name`'s members, given the group."""
        if not self.flat_coarse:
            raise RunError(f"group {name!r}: the coarse stage has no distribution within groups "
                           f"(only a flat run as coarse stage has one)")
        members = np.asarray(coarse_probs, dtype=np.float64)[:, list(self.group(name).members)]
        return members / np.maximum(members.sum(1, keepdims=True), 1e-12)

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def coarse_index(self, group: Group) -> int:
        """The coarse class a group became."""
        return int(self.fine_to_coarse[group.members[0]])

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

    @property
    def combiners(self) -> tuple[str, ...]:
        if self.is_flat:
            return ("flat",)
        return ("product", "routed", "stacking", "blend") if self.flat_coarse else ("product", "routed", "stacking")

    def combiner_for(self, requested: str, where: str) -> str:
        """A flat run has one pipeline, whatever the recipe's combine.method says."""
        check_combiner_name(requested, where)
        if self.is_flat:
            return "flat"
        if requested not in self.combiners:
            kind = "a run with groups and a flat coarse run" if self.flat_coarse else "a run with groups"
            raise RecipeError(f"{where}: {kind} combines by {', '.join(self.combiners)}"
                              + ("" if self.flat_coarse else " (blend needs hierarchy.coarse_run)"))
        return requested

    def product(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """A singleton keeps its coarse probability; a group's members share the group's
        probability as its specialist splits it: P(y) = P(group of y) · P(y | group). Rows sum to
        1 when the inputs do."""
        coarse_probs = self.group_probs(coarse_probs)
        fine = coarse_probs[:, self.fine_to_coarse].astype(np.float64)
        for group in self.groups:
            members = list(group.members)
            fine[:, members] = coarse_probs[:, [self.coarse_index(group)]] * specialist_probs[group.name]
        return fine

    def route(self, coarse_probs: np.ndarray, run_specialist: SpecialistRunner, threshold: float = 0.0) -> Combined:
        """Hard routing. Each group's specialist runs on the rows whose coarse argmax is that group,
        and, with `threshold` > 0, also where the group's probability reaches it.

        A row where only its argmax group's specialist ran takes that specialist's label (or the
        singleton's, where the argmax is a single class). A row where a specialist ran on top of
        that (by the threshold) is decided by the product rule, with any group whose specialist
        did not run on it splitting its probability evenly. `probs` is that product for every row;
        each specialist's probabilities are NaN on the rows it did not run on."""
        coarse_probs = self.group_probs(coarse_probs)
        top = coarse_probs.argmax(1)
        fine = coarse_probs[:, self.fine_to_coarse].astype(np.float64)
        labels = np.asarray(self.coarse_to_first_fine)[top]
        widened = np.zeros(len(top), dtype=bool)
        ran_on: dict[str, np.ndarray] = {}
        outputs: dict[str, np.ndarray] = {}
        for group in self.groups:
            members, coarse = list(group.members), self.coarse_index(group)
            fine[:, members] /= len(members)
            chosen = top == coarse
            extra = (coarse_probs[:, coarse] >= threshold) & ~chosen if threshold > 0 else np.zeros_like(chosen)
            rows = np.flatnonzero(chosen | extra)
            ran_on[group.name] = rows
            outputs[group.name] = np.full((len(top), len(members)), np.nan)
            widened |= extra
            if len(rows) == 0:
                continue
            local = run_specialist(group.name, rows)
            outputs[group.name][rows] = local
            fine[np.ix_(rows, members)] = coarse_probs[rows, coarse][:, None] * local
            on_top = chosen[rows]
            labels[rows[on_top]] = np.asarray(members)[local[on_top].argmax(1)]
        labels[widened] = fine[widened].argmax(1)
        return Combined(probs=fine, labels=labels, specialist_probs=outputs, ran_on=ran_on)

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
                     specialist_probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The groups, the coarse stage's own scores, and how often it routes to the right group
        (its accuracy: it picks the right group or class, an upper bound of the routed pipeline)."""
        coarse_top = self.group_probs(coarse_probs).argmax(1)
        report: dict[str, Any] = {
            "groups": [{"name": g.name, "classes": [self.class_names[m] for m in g.members]} for g in self.groups],
            "coarse": scores(self.fine_to_coarse[labels], coarse_top, len(self.coarse_names))}
        if self.groups:
            report["routing"] = {"accuracy": report["coarse"]["accuracy"], "per_group": {
                g.name: float((coarse_top[np.isin(labels, g.members)] == self.coarse_index(g)).mean())
                for g in self.groups}}
        return report

    @property
    def label_heads(self) -> tuple[Head, ...]:
        """A class label has no attributes to give column by column."""
        return ()

    def describe(self) -> str:
        if not self.groups:
            return f"no groups ({self.num_classes} classes)"
        return "groups " + ", ".join(group.name for group in self.groups) + (
            " over a flat coarse run" if self.flat_coarse else "")

    def to_json(self) -> str:
        payload: dict[str, Any] = {
            "kind": "groups",
            "class_names": list(self.class_names),
            "groups": [{"name": g.name, "members": list(g.members)} for g in self.groups],
            "flat_coarse": self.flat_coarse,
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
                       groups=tuple(Group(g["name"], tuple(g["members"])) for g in payload["groups"]),
                       flat_coarse=bool(payload.get("flat_coarse", False)))
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
    def num_classes(self) -> int:
        return int(np.prod(self.sizes))

    @property
    def is_flat(self) -> bool:
        return False

    part_noun = "head"

    @property
    def parts(self) -> tuple[Head, ...]:
        return self.heads

    def specialist_parts(self, configured: Sequence[str] = ()) -> tuple[Head, ...]:
        """The heads named in `configured` (the recipe's [fine.<head>] tables)."""
        return tuple(head for head in self.heads if head.name in configured)

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
    def coarse_layout(self) -> OutputLayout:
        """A block per head, in head order."""
        return OutputLayout.of_heads([(head.name, head.values) for head in self.heads])

    @property
    def coarse_names(self) -> tuple[str, ...]:
        """The coarse model's outputs, head after head: mask=wear, mask=incorrect, …"""
        return self.coarse_layout.output_names

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

    def specialist_targets(self, part: Head, labels: np.ndarray) -> np.ndarray:
        """A head specialist learns its attribute from every row (N×1)."""
        column = self.heads.index(part)
        return self.decode(labels)[:, column:column + 1]

    def coarse_stage(self, recipe: Recipe) -> Stage:
        return Stage(name="coarse", key="coarse", config=recipe.coarse, layout=self.coarse_layout,
                     losses=tuple(recipe.head(head.name) for head in self.heads),
                     loss_keys=tuple(f"heads.{head.name}" for head in self.heads), targets=self.coarse_targets,
                     separate=self.separate)

    def specialist_stage(self, part: Head, recipe: Recipe) -> Stage:
        config = recipe.specialist(part.name)
        return Stage(name=f"fine/{part.folder}", key=f"fine.{part.name}", config=config,
                     layout=OutputLayout.single(part.values), losses=(single_loss(config),),
                     loss_keys=(f"fine.{part.name}",), targets=lambda labels: self.specialist_targets(part, labels),
                     coarse_backbone=f"models.{part.name}." if self.separate else "backbone.")

    combiners = ("product", "stacking")

    def combiner_for(self, requested: str, where: str) -> str:
        check_combiner_name(requested, where)
        if requested == "routed":
            raise RecipeError(f"{where} needs groups; with attribute heads there is nothing to route; "
                              f"use product or stacking")
        if requested not in self.combiners:
            raise RecipeError(f"{where}: a run with attribute heads combines by "
                              f"{', '.join(self.combiners)}")
        return requested

    def split(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """The coarse output (heads side by side) as one probability block per head."""
        return dict(zip((head.name for head in self.heads), self.coarse_layout.split(probs)))

    def joint_probs(self, head_probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(class) = Π_h P_h(value of class for head h): the heads' outer product, in label order.
        Rows sum to 1 when each head's rows do."""
        joint = None
        for head in self.heads:
            probs = np.asarray(head_probs[head.name], dtype=np.float64)
            joint = probs if joint is None else (joint[:, :, None] * probs[:, None, :]).reshape(len(probs), -1)
        return joint

    def product(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The heads' outer product, a head specialist's probabilities standing in for its head's."""
        return self.joint_probs({**self.split(coarse_probs), **specialist_probs})

    def trace(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each head's value, its probability, and which stage decided it."""
        columns: dict[str, np.ndarray] = {}
        for name, probs in {**self.split(coarse_probs), **specialist_probs}.items():
            values = np.asarray(self.head(name).values, dtype=object)
            columns[name] = values[probs.argmax(1)]
            columns[f"{name}_confidence"] = probs.max(1)
            columns[f"{name}_by"] = np.full(len(probs), "specialist" if name in specialist_probs else "coarse",
                                            dtype=object)
        return columns

    def stage_report(self, labels: np.ndarray, coarse_probs: np.ndarray,
                     specialist_probs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Each head's accuracy and macro-F1: the coarse model's head, its specialist where it has
        one, and in the product (which uses the specialist in place of the head)."""
        values = self.decode(labels)
        coarse = self.split(coarse_probs)
        in_product = self.decode(self.product(coarse_probs, specialist_probs).argmax(1))
        final = self.coarse_layout.label_scores(values, in_product)["heads"]
        report = {}
        for column, head in enumerate(self.heads):
            entry: dict[str, Any] = {"values": list(head.values),
                                     "coarse": scores(values[:, column], coarse[head.name].argmax(1), head.size)}
            if head.name in specialist_probs:
                entry["specialist"] = scores(values[:, column], specialist_probs[head.name].argmax(1), head.size)
            entry["product"] = final[head.name]
            report[head.name] = entry
        return {"heads": report}

    @property
    def label_heads(self) -> tuple[Head, ...]:
        return self.heads

    def describe(self) -> str:
        return "attribute heads " + ", ".join(head.name for head in self.heads)

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


def build_hierarchy(config: HierarchyConfig, class_names: Sequence[str]) -> Hierarchy:
    """The hierarchy a recipe's [hierarchy] describes, over the data's classes (whose names the
    hierarchy's `class_names` may replace: attribute heads name joint classes given by index)."""
    if config.heads:
        if config.coarse_run:
            raise RecipeError("hierarchy.coarse_run: a flat run can be the coarse stage of groups, not of heads")
        factors = FactorHierarchy.from_config(config.heads, config.separate)
        joint_indices = tuple(str(index) for index in range(len(class_names)))
        if tuple(class_names) == joint_indices:  # rows labelled by joint index (in-memory arrays)
            if len(class_names) != factors.num_classes:
                raise RecipeError(f"hierarchy.heads make {factors.num_classes} joint classes (the product of the "
                                  f"head sizes) but the data's labels run 0..{len(class_names) - 1}; every joint "
                                  f"class needs rows, and no label may pass {factors.num_classes - 1}")
            return factors  # the heads name the classes
        if tuple(class_names) != factors.class_names:
            raise RecipeError(f"hierarchy.heads make {factors.num_classes} classes "
                              f"({', '.join(factors.class_names[:3])}, …) but the data has {len(class_names)} "
                              f"({', '.join(class_names[:3])}, …)")
        return factors
    return GroupHierarchy.from_config(config.groups, config.group_names, class_names, bool(config.coarse_run))


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
