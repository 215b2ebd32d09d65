"""What every kind of hierarchy answers for itself, so nothing outside `hierclf.hierarchy` asks
which kind it holds: its classes and parts, its stages, the terms of its product rule, the
per-row trace of stage decisions and the report section only it has.

The product rule is one shape for every kind: a class's probability is the product, over the
hierarchy's `terms`, of that term's probability at the class's column (a term that does not
concern a class counts as 1). A group hierarchy has the coarse stage's group term and one term
per group, which its specialist supplies; an attribute hierarchy has one term per head, which
the coarse stage supplies and a head specialist may replace. The combiners (`hierclf.combine`)
compute on these terms alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from hierclf.data.labels import Attribute
    from hierclf.hierarchy.layout import OutputLayout
    from hierclf.hierarchy.stage import Stage
    from hierclf.recipe.schema import Recipe


class Part(Protocol):
    """What a specialist refines: a group of classes, or an attribute head."""

    name: str

    @property
    def folder(self) -> str: ...


@dataclass(frozen=True, eq=False)
class Term:
    """One factor of the product rule.

    `columns[y]` is the column of class y in this term's probabilities, or -1 where the term
    does not concern y. `part` names the part whose specialist supplies the term; None for a
    term only the coarse stage supplies (the groups' router). `from_coarse` says whether the
    coarse stage supplies the term too (an attribute head; a group's within-group distribution
    when the coarse stage is a flat run)."""

    part: str | None
    columns: np.ndarray
    from_coarse: bool

    @property
    def width(self) -> int:
        return int(self.columns.max()) + 1

    @property
    def members(self) -> np.ndarray:
        """The classes the term concerns, in the order of its columns (for a group: its members)."""
        concerned = np.flatnonzero(self.columns >= 0)
        return concerned[np.argsort(self.columns[concerned], kind="stable")]

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """Each label's column in this term (-1 where the term does not concern it)."""
        return self.columns[np.asarray(labels, dtype=np.int64)]


class ReportSection(Protocol):
    """The out-of-fold figures only one kind of hierarchy has (routing accuracy, per-head scores),
    computed by `Hierarchy.stage_report` and rendered by the section itself."""

    def to_dict(self) -> dict[str, Any]:
        """The keys it adds to report.json."""

    def text_lines(self) -> list[str]:
        """Its lines in the `hierclf evaluate` summary."""

    def markdown_intro(self) -> list[str]:
        """Its lines at the head of report.md."""

    def markdown_lines(self) -> list[str]:
        """Its part of report.md, after the calibration table."""


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

    @property
    def coarse_layout(self) -> OutputLayout:
        """What the coarse model outputs: its classes, or one block per head."""

    def coarse_targets(self, labels: np.ndarray) -> np.ndarray:
        """The coarse stage's target of each fine label (N×H, a column per output block)."""

    def coarse_stage(self, recipe: Recipe) -> Stage: ...

    def specialist_stage(self, part: Part, recipe: Recipe) -> Stage: ...

    @property
    def terms(self) -> tuple[Term, ...]:
        """The terms of the product rule, in the order they multiply."""

    def coarse_terms(self, coarse_probs: np.ndarray) -> list[np.ndarray | None]:
        """Each term's probabilities as the coarse stage gives them (None where it gives none)."""

    def trace(self, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per row, each stage's decision and confidence, as columns of a predictions CSV."""

    def stage_report(self, labels: np.ndarray, coarse_probs: np.ndarray,
                     specialist_probs: Mapping[str, np.ndarray], fine_probs: np.ndarray) -> ReportSection:
        """The out-of-fold figures only this kind has, given every stage's probabilities and the
        final ones of the product rule."""

    @property
    def label_heads(self) -> tuple[Attribute, ...]:
        """The attributes an input CSV may give one column each instead of the label."""

    def describe(self) -> str:
        """What the hierarchy is, in a few words, for messages."""

    def to_json(self) -> str: ...
