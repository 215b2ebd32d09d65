"""The product rule, exact: a class's probability is the product of its hierarchy's terms, each
supplied by its specialist where it has one, else by the coarse stage. For groups that is
P(y) = P(group of y) · P(y | group); for attribute heads the heads' outer product, a head
specialist replacing its head. `Flat` is the pipeline of a run with nothing to combine, and
`CoarseAlone` the coarse stage without its specialists, where it supplies every term itself."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from hierclf.combine.arithmetic import FlatGraph, ProductGraph, on_arrays
from hierclf.combine.base import Combined, Combiner, SpecialistRunner

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy


def product(hierarchy: Hierarchy, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fine-class probabilities (float64) by the product rule; rows sum to 1 when each term's do."""
    parts = list(specialist_probs)
    return on_arrays(ProductGraph(hierarchy, parts), coarse_probs, [specialist_probs[name] for name in parts])[0]


class Flat(Combiner):
    name = "flat"

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        return hierarchy.is_flat

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> FlatGraph:
        return FlatGraph()


class Product(Combiner):
    name = "product"

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> ProductGraph:
        return ProductGraph(hierarchy, parts)


class CoarseAlone(Combiner):
    """The product rule on the coarse stage's own terms: what the run would score had no
    specialist been trained, so a specialist that lowers its head or group shows."""

    name = "coarse"
    uses_specialists = False

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        return not hierarchy.is_flat and all(term.from_coarse for term in hierarchy.terms)

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> ProductGraph:
        """The product of the coarse stage's terms; the specialists' outputs it is handed are ignored."""
        return ProductGraph(hierarchy, [])

    def combine(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        """No specialist runs."""
        probs, labels = on_arrays(self.module(hierarchy, parts), coarse_probs, [])
        return Combined(probs=probs, labels=labels, ran_on={name: np.zeros(0, dtype=np.int64) for name in parts})
