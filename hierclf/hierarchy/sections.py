"""The report sections only one kind of hierarchy has, each computed by its hierarchy
(`stage_report`) and rendering itself: report.json keys, the lines of `hierclf evaluate`, and
its parts of report.md. The report never asks which kind it holds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MARKDOWN_SPECIAL = frozenset("\\`*_[]<>|&~")
"""What markdown (or the HTML it lets through) would read in a name: emphasis, code, links,
tags, entities, a table's cell border."""


def markdown_text(value: Any) -> str:
    """A name (a class, a group, a run's path) as report.md shows it literally: one line, every
    character markdown or HTML would interpret escaped, so `<script>`, `|` or a line break in a
    class name neither runs nor breaks a table."""
    text = " ".join(str(value).splitlines())
    return "".join(f"\\{char}" if char in MARKDOWN_SPECIAL else char for char in text)


@dataclass(frozen=True)
class GroupsSection:
    """A run with groups (or none): the groups, the coarse stage's scores on the coarse classes,
    how often it routes to the right group, and each specialist's macro-F1 on its own group."""

    groups: list[dict[str, Any]]
    coarse: dict[str, float]
    routing: dict[str, Any] | None = None
    specialists: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {"groups": self.groups, "coarse": self.coarse}
        if self.routing is not None:
            report["routing"] = self.routing
        return report

    def text_lines(self) -> list[str]:
        if self.routing is None:
            return []
        return [f"routing accuracy {self.routing['accuracy']:.4f} (upper bound of the routed pipeline)"]

    def markdown_intro(self) -> list[str]:
        if not self.groups:
            return []
        return ["Groups: " + "; ".join(f"**{markdown_text(g['name'])}** = {', '.join(map(markdown_text, g['classes']))}"
                                      for g in self.groups), ""]

    def markdown_lines(self) -> list[str]:
        if self.routing is None:
            return []
        per_group = ", ".join(f"{markdown_text(name)} {value:.4f}" for name, value in self.routing["per_group"].items())
        specialists = ", ".join(f"{markdown_text(name)} macro-F1 {value:.4f}" for name, value in self.specialists.items())
        return ["", f"Routing accuracy (the coarse stage picks the right group or class; an upper bound for the "
                    f"routed pipeline): **{self.routing['accuracy']:.4f}**. Per group: {per_group}.",
                "", f"Specialists, on their own group's rows: {specialists}."]


@dataclass(frozen=True)
class HeadsSection:
    """A run with attribute heads: each head's scores from the coarse model, its specialist (where
    it has one) and in the product of the heads."""

    heads: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"heads": self.heads}

    def text_lines(self) -> list[str]:
        lines = []
        for name, head in self.heads.items():
            specialist = f"  specialist {head['specialist']['macro_f1']:.4f}" if "specialist" in head else ""
            product, coarse = head["product"], head["coarse"]
            lines.append(f"head {name:<8} macro-F1 {product['macro_f1']:.4f}  accuracy {product['accuracy']:.4f}  "
                         f"(coarse head {coarse['macro_f1']:.4f}{specialist})")
        return lines

    def markdown_intro(self) -> list[str]:
        return []

    def markdown_lines(self) -> list[str]:
        lines = ["", "| head | coarse macro-F1 | specialist macro-F1 | in the product: accuracy | macro-F1 |",
                 "| --- | --- | --- | --- | --- |"]
        for name, head in self.heads.items():
            specialist = f"{head['specialist']['macro_f1']:.4f}" if "specialist" in head else "–"
            lines.append(f"| {markdown_text(name)} | {head['coarse']['macro_f1']:.4f} | {specialist} | "
                         f"{head['product']['accuracy']:.4f} | {head['product']['macro_f1']:.4f} |")
        return lines
