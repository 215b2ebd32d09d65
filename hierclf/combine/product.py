"""The product rule, exact: a class's probability is the product of its hierarchy's terms, each
supplied by its specialist where it has one, else by the coarse stage. For groups that is
P(y) = P(group of y) · P(y | group); for attribute heads the heads' outer product, a head
specialist replacing its head. `Flat` is the pipeline of a run with nothing to combine."""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from hierclf.combine.base import Combined, Combiner, SpecialistRunner, everywhere

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy


def supplied_terms(hierarchy: Hierarchy, coarse_probs: np.ndarray,
                   specialist_probs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Each term's probabilities: its specialist's where it has one, else the coarse stage's."""
    coarse = hierarchy.coarse_terms(coarse_probs)
    return [specialist_probs[term.part] if term.part in specialist_probs else coarse[index]
            for index, term in enumerate(hierarchy.terms)]


def product(hierarchy: Hierarchy, coarse_probs: np.ndarray, specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fine-class probabilities (float64) by the product rule; rows sum to 1 when each term's do."""
    fine = np.ones((len(coarse_probs), hierarchy.num_classes), dtype=np.float64)
    for term, probs in zip(hierarchy.terms, supplied_terms(hierarchy, coarse_probs, specialist_probs)):
        concerned = term.columns >= 0
        fine[:, concerned] *= probs[:, term.columns[concerned]]
    return fine


class Flat(Combiner):
    name = "flat"
    summary = "a run without groups or heads: the coarse stage's probabilities as they are"
    needs = "flat is the pipeline of a run without groups or heads"

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        return hierarchy.is_flat

    def combine(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        return Combined(probs=coarse_probs, labels=coarse_probs.argmax(1))


class Product(Combiner):
    name = "product"
    summary = ("P(class) = P(group) × P(class | group), every specialist on every image (with heads: the "
               "heads' product)")
    needs = "product needs groups or heads"

    def combine(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        local, ran_on = everywhere(coarse_probs, parts, run_specialist)
        probs = product(hierarchy, coarse_probs, local)
        return Combined(probs=probs, labels=probs.argmax(1), specialist_probs=local, ran_on=ran_on)
