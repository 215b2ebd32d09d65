"""Blend: with a flat run as the coarse stage, each group's final distribution is a weighted
geometric mean of the flat model's within-group distribution and the specialist's, the weight
fit per group on out-of-fold outputs; P(group) stays the flat model's."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from hierclf.combine.base import (Combined, Combiner, SpecialistRunner, StageOutputs, clipped_log, everywhere,
                                  normalised_log)
from hierclf.combine.product import product
from hierclf.combine.routed import router
from hierclf.errors import RunError

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy
    from hierclf.readback import ReadBack


def _coarse_versions(hierarchy: Hierarchy, coarse_probs: np.ndarray) -> dict[str, np.ndarray]:
    """The coarse stage's version of each specialist's term, by part name."""
    coarse = hierarchy.coarse_terms(coarse_probs)
    return {term.part: coarse[index] for index, term in enumerate(hierarchy.terms) if term.part is not None}


class Blend(Combiner):
    """Per group, P(y | group) ∝ q(y)^w · s(y)^(1−w), q the flat coarse model's distribution within
    the group and s the specialist's; w is chosen on a grid to minimise the out-of-fold log-loss
    of the group's own rows, so a specialist that adds nothing gets w = 1 (the flat model alone)
    and one that knows better gets w near 0."""

    name = "blend"
    summary = ("with a flat run as coarse stage (hierarchy.coarse_run): within each group, a weighted geometric "
               "mean of the flat model's and the specialist's class probabilities, the weight fit per group on "
               "out-of-fold outputs")
    needs = "blend needs groups over a flat run (hierarchy.coarse_run)"
    fits = True
    GRID = np.linspace(0.0, 1.0, 21)

    def __init__(self) -> None:
        self.weights: dict[str, float] | None = None

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        """Groups (a router) whose every term the coarse stage also supplies: a flat coarse run."""
        return (not hierarchy.is_flat and router(hierarchy) is not None
                and all(term.from_coarse for term in hierarchy.terms))

    def fit(self, hierarchy: Hierarchy, outputs: StageOutputs) -> "Blend":
        self.weights = {}
        versions = _coarse_versions(hierarchy, outputs.coarse_probs)
        term_of = {term.part: term for term in hierarchy.terms}
        for name, specialist in outputs.specialist_probs.items():
            targets = term_of[name].targets(outputs.labels)
            rows = np.flatnonzero(targets >= 0)
            if len(rows) == 0:
                self.weights[name] = 1.0
                continue
            flat, own = clipped_log(versions[name][rows]), clipped_log(specialist[rows])
            losses = [-normalised_log(w * flat + (1 - w) * own)[np.arange(len(rows)), targets[rows]].mean()
                      for w in self.GRID]
            self.weights[name] = float(self.GRID[int(np.argmin(losses))])
        return self

    def blended(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, local: Mapping[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
        """Each group's blended distribution over its members."""
        if self.weights is None:
            raise RunError("the blend combiner is not fit yet")
        versions = _coarse_versions(hierarchy, coarse_probs)
        return {name: np.exp(normalised_log(self.weights[name] * clipped_log(versions[name])
                                            + (1 - self.weights[name]) * clipped_log(probs)))
                for name, probs in local.items()}

    def combine(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        local, ran_on = everywhere(coarse_probs, parts, run_specialist)
        probs = product(hierarchy, coarse_probs, self.blended(hierarchy, coarse_probs, local))
        return Combined(probs=probs, labels=probs.argmax(1), specialist_probs=local, ran_on=ran_on)

    def state(self) -> dict[str, Any]:
        return {"weights": dict(self.weights or {})}

    def load_state(self, state: Mapping[str, Any], check: ReadBack, hierarchy: Hierarchy) -> "Blend":
        weights = check.table(check.field(state, "weights", "blend"), "blend.weights")
        missing = [part.name for part in hierarchy.parts if part.name not in weights]
        if missing:
            check.fail(f"blend.weights has no weight for group {missing[0]!r}")
        self.weights = {name: float(check.number(weights[name], f"blend.weights.{name}", lo=0.0, hi=1.0))
                        for name in weights}
        return self
