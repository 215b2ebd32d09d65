"""`Report`: a run's out-of-fold evaluation as one object. `evaluate` computes it; report.json is
its `to_dict()`, and markdown, HTML, the CSV of predictions and the figures render it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierclf.combine.base import Combined
from hierclf.hierarchy.protocol import ReportSection

OOF_ESTIMATES = ("Each row's out-of-fold prediction comes from the one fold model that did not train on it, so "
                 "these figures estimate one fold model. `predict` soft-votes all K fold models, which "
                 "usually scores higher, most on small data; a seed-ensemble control estimates that gain "
                 "leak-free (ensemble_gain).")


PROBE_NOT_BEATEN = (": fine-tuning lost what the pretrained backbone knew. Look at the first epoch's train_loss in "
                    "metrics.jsonl (near ln C when the new head starts right); give the head freeze_epochs alone, "
                    "the backbone a lower backbone_lr (or layer_decay), or lower lr")


def control_name(control: dict[str, Any]) -> str:
    """What a verdict calls a control: the linear probe, or the runs it holds."""
    return f"the linear probe {control['run']}" if control.get("probe") else f"control {', '.join(control['runs'])}"


COST_UNITS = ("images", "megapixels", "seconds")


def budget_text(budget: dict[str, float | None]) -> str:
    """"1.27× images, 1.47× megapixels, 1.31× seconds", leaving out the units not known."""
    return ", ".join(f"{ratio:.2f}× {unit}" for unit, ratio in budget.items() if ratio is not None)


def budget_cell(budget: dict[str, float | None]) -> str:
    """"1.27 / 1.47 / 1.31": a table cell of the three multiples, "–" for a unit not known."""
    return " / ".join("–" if ratio is None else f"{ratio:.2f}" for ratio in budget.values())


def _beaten(chosen: dict[str, Any], other: dict[str, Any]) -> bool:
    """The chosen pipeline beats `other` beyond the noise: a higher score, and its paired interval
    (where there is one) above 0."""
    interval = other.get("paired_difference")
    return chosen["macro_f1"] > other["macro_f1"] and (not interval or interval["low"] > 0)


def _noise(interval: dict[str, float] | None) -> str:
    """The paired interval of a difference, and whether it is within the noise (holds 0)."""
    if not interval:
        return ""
    low, high = interval["low"] * 100, interval["high"] * 100
    within = low <= 0 <= high
    return f"; 95% interval {low:+.2f} to {high:+.2f}{', within the noise' if within else ''}"


@dataclass(eq=False)
class Report:
    """Every pipeline of a run scored out-of-fold (each with its cost and calibration), beside a
    flat run on the same folds and flat controls, with the section only the run's kind of
    hierarchy has; and what the renderers draw from: the rows, their labels and folds, and each
    pipeline's outcome."""

    run: str
    classes: list[str]
    section: ReportSection
    pipelines: dict[str, dict[str, Any]]
    chosen: str
    ids: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    folds: np.ndarray = field(repr=False)
    outcomes: dict[str, Combined] = field(repr=False, default_factory=dict)
    specialists: dict[str, dict[str, Any]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    flat: dict[str, Any] | None = None
    controls: list[dict[str, Any]] = field(default_factory=list)
    against_coarse: list[dict[str, Any]] = field(default_factory=list)
    part_noun: str = "group"
    oof_estimates: str = OOF_ESTIMATES

    @property
    def rows(self) -> int:
        return int(len(self.ids))

    def budget(self, result: dict[str, Any]) -> dict[str, float | None]:
        """A pipeline's or control's training cost as multiples of the flat run's, in each unit
        (images, megapixels, seconds): a run at a larger size pays in megapixels and seconds what
        its image count hides. None where the flat run is missing or did not record the unit."""
        flat = (self.flat or {}).get("training", {})
        return {unit: (result["training"][unit] / flat[unit] if flat.get(unit) else None) for unit in COST_UNITS}

    @property
    def verdict(self) -> list[str]:
        """Whether the recipe's pipeline beats the flat run and each control, with what each one's
        training cost relative to the flat run (when one is compared against)."""
        chosen = self.pipelines[self.chosen]
        mine = budget_text(self.budget(chosen)) if self.flat is not None else ""
        lines = []
        compared = [("the flat run", self.flat)] + [(control_name(c), c) for c in self.controls]
        for label, other in compared:
            if other is None:
                continue
            gain = chosen["macro_f1"] - other["macro_f1"]
            budget = (f" at {mine} of the flat run's training against {budget_text(self.budget(other))}"
                      if mine else "")
            lines.append(f"{self.chosen} {'beats' if gain > 0 else 'does not beat'} {label} "
                         f"({chosen['macro_f1']:.4f} vs {other['macro_f1']:.4f}, {gain * 100:+.2f} points"
                         f"{_noise(other.get('paired_difference'))}){budget}"
                         f"{PROBE_NOT_BEATEN if other.get('probe') and gain <= 0 else ''}")
        return lines + self._cheaper_line(chosen, compared) + self._lowered_lines()

    def _lowered_lines(self) -> list[str]:
        """Each specialist that scores below the coarse stage on its own head or group."""
        lines = []
        for entry in self.against_coarse:
            gain = entry["specialist"] - entry["coarse"]
            if gain < 0:
                alone = self.pipelines.get("coarse")
                lines.append(f"the specialist of {self.part_noun} {entry['part']} lowers it: macro-F1 "
                             f"{entry['specialist']:.4f} against the coarse stage's {entry['coarse']:.4f} on its "
                             f"{entry['rows']} rows ({gain * 100:+.2f} points{_noise(entry['paired_difference'])})"
                             + (f"; the coarse stage alone scores {alone['macro_f1']:.4f} (combiner coarse)"
                                if alone else ""))
        return lines

    def _cheaper_line(self, chosen: dict[str, Any], compared: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
        """Where the pipeline does not beat a run that cost less to train beyond the noise, the
        cheapest such run named as the better choice: a hierarchy must pay for what it costs."""
        unit = "megapixels" if chosen["training"].get("megapixels") else "images"
        cheaper = [(other["training"][unit] / chosen["training"][unit], label) for label, other in compared
                   if other is not None and other["training"][unit] < chosen["training"][unit]
                   and not _beaten(chosen, other)]
        if not cheaper or self.chosen == "flat":
            return []
        share, label = min(cheaper)
        return [f"{label} scores as well for less ({share:.2f}× the training {unit} of {self.chosen}): it is the "
                f"better pipeline here"]

    def score_rows(self) -> list[tuple[str, dict[str, Any], bool]]:
        """(name, scores, is the recipe's combiner) for the flat run compared against, each control,
        then each pipeline."""
        rows = [("flat", self.flat, False)] if self.flat is not None else []
        rows += [("probe" if control.get("probe") else f"control {number}", control, False)
                 for number, control in enumerate(self.controls, 1)]
        several = len(self.pipelines) > 1
        return rows + [(name, result, several and name == self.chosen) for name, result in self.pipelines.items()]

    def to_dict(self) -> dict[str, Any]:
        """report.json."""
        report: dict[str, Any] = {"run": self.run, "rows": self.rows, "classes": list(self.classes),
                                  **self.section.to_dict()}
        if self.specialists:
            report["specialists"] = self.specialists
        report.update(pipelines=self.pipelines, chosen=self.chosen, oof_estimates=self.oof_estimates,
                      calibration=self.calibration)
        if self.flat is not None:
            report["flat"] = self.flat
        report.update(controls=self.controls, against_coarse=self.against_coarse, verdict=self.verdict)
        return report
