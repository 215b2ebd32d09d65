"""The combiners as torch modules, for the exported graph: the arithmetic of `hierclf.combine` on
every stage's probabilities, built from the hierarchy's terms and the combiner's fitted state.

A graph has no data-dependent execution, so every specialist runs on every image; `routed` then
selects, row by row, what hierclf's routed combiner gives: the same probabilities and labels, at
the cost of the product. The export's tests hold each module equal to `predict_items`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from hierclf.combine.routed import router
from hierclf.errors import HierclfError

if TYPE_CHECKING:
    from hierclf.combine.base import Combiner
    from hierclf.hierarchy.protocol import Hierarchy

Outputs = tuple[torch.Tensor, torch.Tensor]
"""The final probabilities (N × classes, float32) and labels (N, int64)."""


def coarse_term_maps(hierarchy: Hierarchy) -> list[np.ndarray | None]:
    """Each term's coarse version as a linear map of the coarse stage's output, renormalised per
    row: what `coarse_terms` gives for each one-hot output. Every hierarchy's coarse terms are
    such maps (a group's probability sums its members', a group's distribution within it is its
    members' renormalised, a head is its block); that is checked on random outputs, so a kind of
    hierarchy whose terms are not is refused rather than exported wrong."""
    layout = hierarchy.coarse_layout
    maps = hierarchy.coarse_terms(np.eye(layout.width))
    generator = np.random.default_rng(0)
    probs = np.concatenate([generator.dirichlet(np.ones(size), 32) for size in layout.sizes], axis=1)
    for found, linear in zip(hierarchy.coarse_terms(probs), maps):
        if (found is None) != (linear is None) or (
                found is not None and not np.allclose(_renormalised(probs @ linear), found, atol=1e-6)):
            raise HierclfError(f"a run with {hierarchy.describe()} cannot be exported: its coarse stage's terms "
                               f"are not sums of its outputs")
    return maps


def _renormalised(values: np.ndarray) -> np.ndarray:
    return values / np.maximum(values.sum(1, keepdims=True), 1e-12)


def _clipped_log(probs: torch.Tensor) -> torch.Tensor:
    return probs.clamp(1e-7, 1.0).log()


class Terms(torch.nn.Module):
    """The terms of the product rule: each one's probabilities (its specialist's where `parts` has
    one, else the coarse stage's version) and where they land among the classes."""

    def __init__(self, hierarchy: Hierarchy, parts: Sequence[str]):
        super().__init__()
        self.terms = hierarchy.terms
        self.source = [list(parts).index(term.part) if term.part in parts else None for term in self.terms]
        for index, (term, linear) in enumerate(zip(self.terms, coarse_term_maps(hierarchy))):
            spread = np.zeros((term.width, hierarchy.num_classes), dtype=np.float32)
            concerned = np.flatnonzero(term.columns >= 0)
            spread[term.columns[concerned], concerned] = 1.0
            self.register_buffer(f"spread{index}", torch.from_numpy(spread))  # a term's column → its classes
            self.register_buffer(f"untouched{index}", torch.from_numpy((term.columns < 0).astype(np.float32)))
            if linear is not None:
                self.register_buffer(f"map{index}", torch.from_numpy(linear.astype(np.float32)))

    def coarse_version(self, index: int, coarse: torch.Tensor) -> torch.Tensor:
        values = coarse @ getattr(self, f"map{index}")
        return values / values.sum(1, keepdim=True).clamp_min(1e-12)

    def supplied(self, index: int, coarse: torch.Tensor, specialists: Sequence[torch.Tensor]) -> torch.Tensor:
        source = self.source[index]
        return specialists[source] if source is not None else self.coarse_version(index, coarse)

    def factor(self, index: int, probs: torch.Tensor) -> torch.Tensor:
        """A term's probabilities spread over the classes: each class its column's, 1 where the
        term does not concern it."""
        return probs @ getattr(self, f"spread{index}") + getattr(self, f"untouched{index}")

    def product(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Fine-class probabilities from every term's: the product of each class's columns."""
        fine = self.factor(0, probs[0])
        for index in range(1, len(probs)):
            fine = fine * self.factor(index, probs[index])
        return fine


class FlatGraph(torch.nn.Module):
    def forward(self, coarse: torch.Tensor, specialists: Sequence[torch.Tensor]) -> Outputs:
        return coarse, coarse.argmax(1)


class ProductGraph(torch.nn.Module):
    """The product rule; with `weights` (blend), each group's term is first the weighted geometric
    mean of the coarse stage's version and the specialist's."""

    def __init__(self, hierarchy: Hierarchy, parts: Sequence[str], weights: dict[str, float] | None = None):
        super().__init__()
        self.terms = Terms(hierarchy, parts)
        self.weights = [None if weights is None or term.part not in parts else float(weights[term.part])
                        for term in hierarchy.terms]

    def forward(self, coarse: torch.Tensor, specialists: Sequence[torch.Tensor]) -> Outputs:
        probs = []
        for index, weight in enumerate(self.weights):
            supplied = self.terms.supplied(index, coarse, specialists)
            if weight is not None:
                version = self.terms.coarse_version(index, coarse)
                supplied = (weight * _clipped_log(version) + (1 - weight) * _clipped_log(supplied)).softmax(1)
            probs.append(supplied)
        fine = self.terms.product(probs)
        return fine, fine.argmax(1)


class RoutedGraph(torch.nn.Module):
    """Routed, computed everywhere then selected: a row takes its coarse class's specialist where
    the coarse argmax (or, with `threshold`, the class's probability) sends it there, and an
    even split of the class's probability where not; its label is that specialist's, or the
    product's where the threshold sent it to more than one."""

    def __init__(self, hierarchy: Hierarchy, parts: Sequence[str], threshold: float):
        super().__init__()
        self.terms = Terms(hierarchy, parts)
        self.threshold = threshold
        by = router(hierarchy)
        self.router = hierarchy.terms.index(by)
        first_class = [int(np.flatnonzero(by.columns == column)[0]) for column in range(by.width)]
        self.register_buffer("first_class", torch.tensor(first_class, dtype=torch.int64))
        self.groups = []  # (term index, coarse class, specialist index) of each group with a specialist
        for index, term in enumerate(hierarchy.terms):
            if term.part is not None and term.part in parts:
                self.groups.append((index, int(by.columns[term.members[0]]), list(parts).index(term.part)))
                self.register_buffer(f"members{index}", torch.from_numpy(term.members.astype(np.int64)))

    def forward(self, coarse: torch.Tensor, specialists: Sequence[torch.Tensor]) -> Outputs:
        by = self.terms.coarse_version(self.router, coarse)
        top = by.argmax(1)
        fine = self.terms.factor(self.router, by)  # each class its coarse class's probability
        labels = self.first_class[top]
        widened = torch.zeros_like(top, dtype=torch.bool)
        for index, column, source in self.groups:
            local, members = specialists[source], getattr(self, f"members{index}")
            chosen = top == column
            ran = chosen | (by[:, column] >= self.threshold) if self.threshold > 0 else chosen
            share = torch.where(ran[:, None], local, torch.full_like(local, 1.0 / local.shape[1]))
            fine = fine * self.terms.factor(index, share)
            labels = torch.where(chosen, members[local.argmax(1)], labels)
            widened = widened | (ran & ~chosen)
        return fine, torch.where(widened, fine.argmax(1), labels)


class StackingGraph(torch.nn.Module):
    """The stacking regression on the stages' log-probabilities, its classes spread over all."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, num_classes: int):
        super().__init__()
        self.register_buffer("coef", torch.from_numpy(np.asarray(coef, dtype=np.float32).T.copy()))
        self.register_buffer("intercept", torch.from_numpy(np.asarray(intercept, dtype=np.float32)))
        spread = np.zeros((len(classes), num_classes), dtype=np.float32)
        spread[np.arange(len(classes)), classes] = 1.0
        self.register_buffer("spread", torch.from_numpy(spread))
        self.binary = self.coef.shape[1] == 1

    def forward(self, coarse: torch.Tensor, specialists: Sequence[torch.Tensor]) -> Outputs:
        scores = _clipped_log(torch.cat([coarse, *specialists], dim=1)) @ self.coef + self.intercept
        if self.binary:  # scikit-learn's binary form: one logit, for the second class
            scores = torch.cat([torch.zeros_like(scores), scores], dim=1)
        probs = scores.softmax(1) @ self.spread
        return probs, probs.argmax(1)


GRAPHS: dict[str, Callable[["Combiner", "Hierarchy", Sequence[str]], torch.nn.Module]] = {
    "flat": lambda combiner, hierarchy, parts: FlatGraph(),
    "product": lambda combiner, hierarchy, parts: ProductGraph(hierarchy, parts),
    "blend": lambda combiner, hierarchy, parts: ProductGraph(hierarchy, parts, combiner.weights),
    "routed": lambda combiner, hierarchy, parts: RoutedGraph(hierarchy, parts, combiner.threshold),
    "stacking": lambda combiner, hierarchy, parts: StackingGraph(combiner.coef, combiner.intercept,
                                                                 combiner.classes, combiner.num_classes),
}
"""Each combiner's module, by the combiner's name, from the fitted combiner."""


def combiner_graph(combiner: Combiner, hierarchy: Hierarchy, parts: Sequence[str]) -> torch.nn.Module:
    """The module that combines the stages as `combiner` does; `parts` names the specialists, in
    the order their probabilities are passed."""
    if combiner.name not in GRAPHS:
        raise HierclfError(f"the {combiner.name} combiner cannot be exported; export with --combiner "
                           f"{' or '.join(GRAPHS)}")
    return GRAPHS[combiner.name](combiner, hierarchy, parts)
