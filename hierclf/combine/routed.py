"""Hard routing: the coarse stage's argmax decides which specialist runs on an image, so each
image pays for one specialist at most. It needs a router, a term only the coarse stage supplies
whose classes the specialists' terms split (groups); attribute heads have nothing to route."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from hierclf.combine.arithmetic import RoutedGraph, on_arrays, router_index, tensor
from hierclf.combine.base import Combined, Combiner, SpecialistRunner

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy
    from hierclf.recipe.schema import CombineConfig


class Routed(Combiner):
    """Each part's specialist runs on the rows whose coarse argmax is its coarse class, and, with
    `threshold` > 0, also where that class's probability reaches it.

    A row where only its argmax's specialist ran takes that specialist's label (or the single
    class, where the argmax is one). A row where a specialist ran on top of that (by the
    threshold) is decided by the product rule, with any part whose specialist did not run on it
    splitting its probability evenly. `probs` is that product for every row; each specialist's
    probabilities are NaN on the rows it did not run on."""

    name = "routed"

    def __init__(self, threshold: float = 0.0):
        self.threshold = threshold

    @classmethod
    def from_config(cls, config: CombineConfig) -> "Routed":
        return cls(config.route_threshold)

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        return not hierarchy.is_flat and router_index(hierarchy) is not None

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> RoutedGraph:
        return RoutedGraph(hierarchy, parts, self.threshold)

    def combine(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        """The module's routes decide where each specialist runs; it then combines with each
        specialist's outputs on its rows (NaN elsewhere, which it never reads)."""
        module = self.module(hierarchy, parts)
        with torch.no_grad():
            sent = module.routes(tensor(coarse_probs))[2]
        outputs, ran_on = {}, {}
        for source, name in enumerate(parts):
            rows = np.flatnonzero(sent[source].numpy())
            width = hierarchy.terms[module.terms.source.index(source)].width
            outputs[name], ran_on[name] = np.full((len(coarse_probs), width), np.nan), rows
            if len(rows):
                outputs[name][rows] = run_specialist(name, rows)
        probs, labels = on_arrays(module, coarse_probs, list(outputs.values()))
        return Combined(probs=probs, labels=labels, specialist_probs=outputs, ran_on=ran_on)
