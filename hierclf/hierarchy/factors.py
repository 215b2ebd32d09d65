"""A hierarchy of attributes: each class is a combination of attribute values (mask × gender ×
age), the label their mixed-radix number; the coarse stage predicts every attribute with a head
of its own, and a head may get a specialist whose probabilities replace the head's."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping, Sequence, Union

import numpy as np

from hierclf.data.labels import Attribute, decode_factors, encode_factors, joint_class_names
from hierclf.errors import RecipeError, RunError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.hierarchy.protocol import Term
from hierclf.hierarchy.sections import HeadsSection
from hierclf.hierarchy.stage import Stage, folder_name, single_loss
from hierclf.metrics import scores
from hierclf.readback import parse_json
from hierclf.recipe.schema import Recipe


@dataclass(frozen=True)
class Head(Attribute):
    """One attribute the coarse model predicts with a head of its own."""

    @property
    def folder(self) -> str:
        return folder_name(self.name)


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
        return joint_class_names(self.heads)

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

    # --- stages

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

    # --- the product rule: P(class) = Π_h P_h(value of the class for head h)

    @cached_property
    def terms(self) -> tuple[Term, ...]:
        """One term per head: each class's value of that head."""
        values = self.decode(np.arange(self.num_classes))
        return tuple(Term(part=head.name, columns=values[:, column], from_coarse=True)
                     for column, head in enumerate(self.heads))

    def coarse_terms(self, coarse_probs: np.ndarray) -> list[np.ndarray | None]:
        """Each head's block of the coarse output."""
        return list(self.coarse_layout.split(coarse_probs))

    # --- what only heads report

    def trace(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each head's value, its probability, and which stage decided it."""
        columns: dict[str, np.ndarray] = {}
        coarse = dict(zip((head.name for head in self.heads), self.coarse_terms(coarse_probs)))
        for name, probs in {**coarse, **specialist_probs}.items():
            values = np.asarray(self.head(name).values, dtype=object)
            columns[name] = values[probs.argmax(1)]
            columns[f"{name}_confidence"] = probs.max(1)
            columns[f"{name}_by"] = np.full(len(probs), "specialist" if name in specialist_probs else "coarse",
                                            dtype=object)
        return columns

    def stage_report(self, labels: np.ndarray, coarse_probs: np.ndarray,
                     specialist_probs: Mapping[str, np.ndarray], fine_probs: np.ndarray) -> HeadsSection:
        """Each head's accuracy and macro-F1: the coarse model's head, its specialist where it has
        one, and in the product (which uses the specialist in place of the head)."""
        values = self.decode(labels)
        coarse = self.coarse_terms(coarse_probs)
        in_product = self.decode(np.asarray(fine_probs).argmax(1))
        final = self.coarse_layout.label_scores(values, in_product)["heads"]
        report = {}
        for column, head in enumerate(self.heads):
            entry: dict[str, Any] = {"values": list(head.values),
                                     "coarse": scores(values[:, column], coarse[column].argmax(1), head.size)}
            if head.name in specialist_probs:
                entry["specialist"] = scores(values[:, column], specialist_probs[head.name].argmax(1), head.size)
            entry["product"] = final[head.name]
            report[head.name] = entry
        return HeadsSection(report)

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
            payload = parse_json(text)
            return cls(heads=tuple(Head(h["name"], tuple(h["values"])) for h in payload["heads"]),
                       separate=bool(payload.get("separate", False)))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{source} is not a hierarchy file: {error}") from None
