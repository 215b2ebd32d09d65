"""The product rule, exact: a class's probability is the product of its hierarchy's terms, each
supplied by its specialist where it has one, else by the coarse stage. For groups that is
P(y) = P(group of y) · P(y | group); for attribute heads the heads' outer product, a head
specialist replacing its head. `Flat` is the pipeline of a run with nothing to combine."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from hierclf.combine.arithmetic import FlatGraph, ProductGraph, on_arrays
from hierclf.combine.base import Combiner

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy


def product(hierarchy: Hierarchy, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fine-class probabilities (float64) by the product rule; rows sum to 1 when each term's do."""
    parts = list(specialist_probs)
    return on_arrays(ProductGraph(hierarchy, parts), coarse_probs, [specialist_probs[name] for name in parts])[0]


class Flat(Combiner):
    name = "flat"
    summary = "a run without groups or heads: the coarse stage's probabilities as they are"
    needs = "flat is the pipeline of a run without groups or heads"

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        return hierarchy.is_flat

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> FlatGraph:
        return FlatGraph()


class Product(Combiner):
    name = "product"
    summary = ("P(class) = P(group) × P(class | group), every specialist on every image (with heads: the "
               "heads' product)")
    needs = "product needs groups or heads"

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> ProductGraph:
        return ProductGraph(hierarchy, parts)
