"""The combiners' arithmetic, once: torch modules built from the hierarchy's terms and a
combiner's fitted state, in float64. `predict`, `evaluate` and the combiners' fit call them on
arrays (`on_arrays`), and `hierclf export` traces the very same modules into its graph (cast to
float32), so the three cannot drift apart.

A module has no data-dependent execution, so it takes every specialist's probabilities on every
row; routed's module selects row by row what routing gives, and the routed combiner runs each
specialist only on its routed rows and hands the module a placeholder elsewhere."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from hierclf.errors import HierclfError

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy

Outputs = tuple[torch.Tensor, torch.Tensor]
"""The final probabilities (N × classes) and labels (N, int64)."""


def clipped_log(probs: torch.Tensor) -> torch.Tensor:
    return probs.clamp(1e-7, 1.0).log()


def blended_log(weight: float, version: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    """log of q^w · s^(1−w), renormalised: blend's geometric mean of the coarse stage's version
    of a group's distribution (q) and its specialist's (s)."""
    return (weight * clipped_log(version) + (1 - weight) * clipped_log(own)).log_softmax(1)


def router_index(hierarchy: Hierarchy) -> int | None:
    """The index of the term only the coarse stage supplies (the groups' coarse classes), if any."""
    return next((index for index, term in enumerate(hierarchy.terms) if term.part is None), None)


def coarse_term_maps(hierarchy: Hierarchy) -> list[np.ndarray | None]:
    """Each term's coarse version as a linear map of the coarse stage's output, renormalised per
    row: what `coarse_terms` gives for each one-hot output. Every hierarchy's coarse terms are
    such maps (a group's probability sums its members', a group's distribution within it is its
    members' renormalised, a head is its block); that is checked on random outputs, so a kind of
    hierarchy whose terms are not is refused rather than combined wrong."""
    layout = hierarchy.coarse_layout
    maps = hierarchy.coarse_terms(np.eye(layout.width))
    generator = np.random.default_rng(0)
    probs = np.concatenate([generator.dirichlet(np.ones(size), 32) for size in layout.sizes], axis=1)
    for found, linear in zip(hierarchy.coarse_terms(probs), maps):
        if (found is None) != (linear is None) or (
                found is not None and not np.allclose(_renormalised(probs @ linear), found, atol=1e-6)):
            raise HierclfError(f"a run with {hierarchy.describe()} cannot be combined: its coarse stage's terms "
                               f"are not sums of its outputs")
    return maps


def _renormalised(values: np.ndarray) -> np.ndarray:
    return values / np.maximum(values.sum(1, keepdims=True), 1e-12)


class Terms(torch.nn.Module):
    """The terms of the product rule: each one's probabilities (its specialist's where `parts` has
    one, else the coarse stage's version) and where they land among the classes."""

    def __init__(self, hierarchy: Hierarchy, parts: Sequence[str]):
        super().__init__()
        self.terms = hierarchy.terms
        self.source = [list(parts).index(term.part) if term.part in parts else None for term in self.terms]
        for index, (term, linear) in enumerate(zip(self.terms, coarse_term_maps(hierarchy))):
            spread = np.zeros((term.width, hierarchy.num_classes), dtype=np.float64)
            concerned = np.flatnonzero(term.columns >= 0)
            spread[term.columns[concerned], concerned] = 1.0
            self.register_buffer(f"spread{index}", torch.from_numpy(spread))  # a term's column → its classes
            self.register_buffer(f"untouched{index}", torch.from_numpy((term.columns < 0).astype(np.float64)))
            if linear is not None:
                self.register_buffer(f"map{index}", torch.from_numpy(linear.astype(np.float64)))

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
                supplied = blended_log(weight, self.terms.coarse_version(index, coarse), supplied).exp()
            probs.append(supplied)
        fine = self.terms.product(probs)
        return fine, fine.argmax(1)


class RoutedGraph(torch.nn.Module):
    """Routed: a row takes its coarse class's specialist where the coarse argmax (or, with
    `threshold`, the class's probability) sends it there, and an even split of the class's
    probability where not; its label is that specialist's, or the product's where the threshold
    sent it to more than one. What a specialist gives on rows not sent to it is never used."""

    def __init__(self, hierarchy: Hierarchy, parts: Sequence[str], threshold: float):
        super().__init__()
        self.terms = Terms(hierarchy, parts)
        self.threshold = threshold
        self.router = router_index(hierarchy)
        by = hierarchy.terms[self.router]
        first_class = [int(np.flatnonzero(by.columns == column)[0]) for column in range(by.width)]
        self.register_buffer("first_class", torch.tensor(first_class, dtype=torch.int64))
        self.groups = []  # (term index, coarse class, specialist index) of each group with a specialist
        for index, term in enumerate(hierarchy.terms):
            if term.part is not None and term.part in parts:
                self.groups.append((index, int(by.columns[term.members[0]]), list(parts).index(term.part)))
                self.register_buffer(f"members{index}", torch.from_numpy(term.members.astype(np.int64)))

    def routes(self, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
        """The coarse classes' probabilities, their argmax, and the rows sent to each specialist
        (by its index in `parts`)."""
        by = self.terms.coarse_version(self.router, coarse)
        top = by.argmax(1)
        return by, top, {source: top == column if self.threshold <= 0 else
                         (top == column) | (by[:, column] >= self.threshold) for _, column, source in self.groups}

    def forward(self, coarse: torch.Tensor, specialists: Sequence[torch.Tensor]) -> Outputs:
        by, top, sent = self.routes(coarse)
        fine = self.terms.factor(self.router, by)  # each class its coarse class's probability
        labels = self.first_class[top]
        widened = torch.zeros_like(top, dtype=torch.bool)
        for index, column, source in self.groups:
            local, members, ran = specialists[source], getattr(self, f"members{index}"), sent[source]
            chosen = top == column
            share = torch.where(ran[:, None], local, torch.full_like(local, 1.0 / local.shape[1]))
            fine = fine * self.terms.factor(index, share)
            labels = torch.where(chosen, members[share.argmax(1)], labels)
            widened = widened | (ran & ~chosen)
        return fine, torch.where(widened, fine.argmax(1), labels)


class StackingGraph(torch.nn.Module):
    """The stacking regression on the stages' log-probabilities, its classes spread over all."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, num_classes: int):
        super().__init__()
        self.register_buffer("coef", torch.from_numpy(np.asarray(coef, dtype=np.float64).T.copy()))
        self.register_buffer("intercept", torch.from_numpy(np.asarray(intercept, dtype=np.float64)))
        spread = np.zeros((len(classes), num_classes), dtype=np.float64)
        spread[np.arange(len(classes)), classes] = 1.0
        self.register_buffer("spread", torch.from_numpy(spread))
        self.binary = self.coef.shape[1] == 1

    def regression(self, features: torch.Tensor) -> torch.Tensor:
        """Probabilities over every class from the stages' log-probabilities (0 for a class absent
        when it was fit)."""
        scores = features @ self.coef + self.intercept
        if self.binary:  # scikit-learn's binary form: one logit, for the second class
            scores = torch.cat([torch.zeros_like(scores), scores], dim=1)
        return scores.softmax(1) @ self.spread

    def forward(self, coarse: torch.Tensor, specialists: Sequence[torch.Tensor]) -> Outputs:
        probs = self.regression(clipped_log(torch.cat([coarse, *specialists], dim=1)))
        return probs, probs.argmax(1)


def tensor(values: np.ndarray) -> torch.Tensor:
    """Arrays as float64 tensors, the precision the modules compute in on arrays."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64))


def on_arrays(module: torch.nn.Module, coarse_probs: np.ndarray, specialist_probs: Sequence[np.ndarray]
              ) -> tuple[np.ndarray, np.ndarray]:
    """A combiner's module on arrays: the final probabilities (float64) and labels."""
    with torch.no_grad():
        probs, labels = module(tensor(coarse_probs), [tensor(p) for p in specialist_probs])
    return probs.numpy(), labels.numpy()
