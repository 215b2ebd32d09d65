"""Blend: with a flat run as the coarse stage, each group's final distribution is a weighted
geometric mean of the flat model's within-group distribution and the specialist's, the weight
fit per group on out-of-fold outputs; P(group) stays the flat model's."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from hierclf.combine.arithmetic import ProductGraph, Terms, blended_log, router_index, tensor
from hierclf.combine.base import Combiner, StageOutputs
from hierclf.errors import RunError

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy
    from hierclf.readback import ReadBack


class Blend(Combiner):
    """Per group, P(y | group) ∝ q(y)^w · s(y)^(1−w), q the flat coarse model's distribution within
    the group and s the specialist's; w is chosen on a grid to minimise the out-of-fold log-loss
    of the group's own rows, so a specialist that adds nothing gets w = 1 (the flat model alone)
    and one that knows better gets w near 0."""

    name = "blend"
    fits = True
    GRID = np.linspace(0.0, 1.0, 21)

    def __init__(self) -> None:
        self.weights: dict[str, float] | None = None

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        """Groups (a router) whose every term the coarse stage also supplies: a flat coarse run."""
        return (not hierarchy.is_flat and router_index(hierarchy) is not None
                and all(term.from_coarse for term in hierarchy.terms))

    def fit(self, hierarchy: Hierarchy, outputs: StageOutputs) -> "Blend":
        """Each group's weight, on the rows of its own classes, by the module's own blend."""
        terms = Terms(hierarchy, list(outputs.specialist_probs))
        coarse = tensor(outputs.coarse_probs)
        self.weights = {}
        for index, term in enumerate(hierarchy.terms):
            if term.part not in outputs.specialist_probs:
                continue
            targets = term.targets(outputs.labels)
            rows = np.flatnonzero(targets >= 0)
            if len(rows) == 0:
                self.weights[term.part] = 1.0
                continue
            version, own = terms.coarse_version(index, coarse[rows]), tensor(outputs.specialist_probs[term.part][rows])
            chosen = torch.from_numpy(targets[rows])[:, None]
            losses = [-blended_log(float(w), version, own).gather(1, chosen).mean().item() for w in self.GRID]
            self.weights[term.part] = float(self.GRID[int(np.argmin(losses))])
        return self

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> ProductGraph:
        if self.weights is None:
            raise RunError("the blend combiner is not fit yet")
        return ProductGraph(hierarchy, parts, self.weights)

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
