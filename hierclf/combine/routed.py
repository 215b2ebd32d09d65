"""Hard routing: the coarse stage's argmax decides which specialist runs on an image, so each
image pays for one specialist at most. It needs a router, a term only the coarse stage supplies
whose classes the specialists' terms split (groups); attribute heads have nothing to route."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from hierclf.combine.base import Combined, Combiner, SpecialistRunner

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy, Term
    from hierclf.recipe.schema import CombineConfig


def router(hierarchy: Hierarchy) -> Term | None:
    """The term only the coarse stage supplies (the groups' coarse classes), if the hierarchy has one."""
    return next((term for term in hierarchy.terms if term.part is None), None)


class Routed(Combiner):
    """Each part's specialist runs on the rows whose coarse argmax is its coarse class, and, with
    `threshold` > 0, also where that class's probability reaches it.

    A row where only its argmax's specialist ran takes that specialist's label (or the single
    class, where the argmax is one). A row where a specialist ran on top of that (by the
    threshold) is decided by the product rule, with any part whose specialist did not run on it
    splitting its probability evenly. `probs` is that product for every row; each specialist's
    probabilities are NaN on the rows it did not run on."""

    name = "routed"
    summary = "the coarse argmax picks one specialist per image (groups only)"
    needs = "routed needs groups (with attribute heads there is nothing to route)"

    def __init__(self, threshold: float = 0.0):
        self.threshold = threshold

    @classmethod
    def from_config(cls, config: CombineConfig) -> "Routed":
        return cls(config.route_threshold)

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        return not hierarchy.is_flat and router(hierarchy) is not None

    def combine(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        by = router(hierarchy)
        coarse_probs = hierarchy.coarse_terms(coarse_probs)[hierarchy.terms.index(by)]
        top = coarse_probs.argmax(1)
        fine = coarse_probs[:, by.columns].astype(np.float64)
        first_class = np.asarray([np.flatnonzero(by.columns == c)[0] for c in range(by.width)])
        labels = first_class[top]
        widened = np.zeros(len(top), dtype=bool)
        ran_on: dict[str, np.ndarray] = {}
        outputs: dict[str, np.ndarray] = {}
        for term in hierarchy.terms:
            if term.part is None:
                continue
            members = list(term.members)
            coarse = int(by.columns[members[0]])
            fine[:, members] /= len(members)
            chosen = top == coarse
            extra = (coarse_probs[:, coarse] >= self.threshold) & ~chosen if self.threshold > 0 \
                else np.zeros_like(chosen)
            rows = np.flatnonzero(chosen | extra)
            ran_on[term.part] = rows
            outputs[term.part] = np.full((len(top), len(members)), np.nan)
            widened |= extra
            if len(rows) == 0:
                continue
            local = run_specialist(term.part, rows)
            outputs[term.part][rows] = local
            fine[np.ix_(rows, members)] = coarse_probs[rows, coarse][:, None] * local
            on_top = chosen[rows]
            labels[rows[on_top]] = np.asarray(members)[local[on_top].argmax(1)]
        labels[widened] = fine[widened].argmax(1)
        return Combined(probs=fine, labels=labels, specialist_probs=outputs, ran_on=ran_on)
