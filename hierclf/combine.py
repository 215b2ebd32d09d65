"""Combiners: from the coarse stage's and the specialists' probabilities to final labels.

- `product`: P(y) = P(group of y) · P(y | group), exact, needs every specialist on every image.
- `routed`: the coarse argmax decides; a specialist runs only on the images routed to it
  (conditional execution), optionally also where P(group) ≥ τ, and the product decides there.
- `stacking`: a logistic regression on out-of-fold stage outputs, stored as JSON.

With attribute heads (a `FactorHierarchy`), `product` is the heads' outer product, a head
specialist's probabilities standing in for its head's; routing has nothing to route.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
from sklearn.linear_model import LogisticRegression

from hierclf.errors import RunError
from hierclf.hierarchy import FactorHierarchy, GroupHierarchy, Hierarchy

SpecialistRunner = Callable[[str, np.ndarray], np.ndarray]
"""(group name, row indices) → that group's specialist probabilities for those rows."""


def product(hierarchy: Hierarchy, coarse_probs: np.ndarray,
            specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fine-class probabilities: a singleton keeps its coarse probability; a group's members share
    the group's probability as its specialist splits it. With heads, the product of every head's
    probability of the class's value, a head specialist replacing its head. Rows sum to 1 when
    the inputs do."""
    if isinstance(hierarchy, FactorHierarchy):
        return hierarchy.joint_probs({**hierarchy.split(coarse_probs), **specialist_probs})
    fine = coarse_probs[:, hierarchy.fine_to_coarse].astype(np.float64)
    for group in hierarchy.groups:
        members = list(group.members)
        fine[:, members] = coarse_probs[:, [hierarchy.coarse_index(group)]] * specialist_probs[group.name]
    return fine


@dataclass(frozen=True, eq=False)
class Routed:
    """Routed labels, the probabilities behind them, which rows each specialist ran on, and each
    specialist's own probabilities (NaN on the rows it did not run on)."""

    labels: np.ndarray
    probs: np.ndarray
    ran_on: dict[str, np.ndarray]
    specialist_probs: dict[str, np.ndarray]


def routed(hierarchy: GroupHierarchy, coarse_probs: np.ndarray, run_specialist: SpecialistRunner,
           threshold: float = 0.0) -> Routed:
    """Hard routing. Each group's specialist runs on the rows whose coarse argmax is that group,
    and, with `threshold` > 0, also where the group's probability reaches it.

    A row where only its argmax group's specialist ran takes that specialist's label (or the
    singleton's, where the argmax is a single class). A row where a specialist ran on top of that
    (by the threshold) is decided by the product rule, with any group whose specialist did not
    run on it splitting its probability evenly. `probs` is that product for every row."""
    top = coarse_probs.argmax(1)
    fine = coarse_probs[:, hierarchy.fine_to_coarse].astype(np.float64)
    labels = np.asarray(hierarchy.coarse_to_first_fine)[top]
    widened = np.zeros(len(top), dtype=bool)
    ran_on: dict[str, np.ndarray] = {}
    outputs: dict[str, np.ndarray] = {}
    for group in hierarchy.groups:
        members, coarse = list(group.members), hierarchy.coarse_index(group)
        fine[:, members] /= len(members)
        chosen = top == coarse
        extra = (coarse_probs[:, coarse] >= threshold) & ~chosen if threshold > 0 else np.zeros_like(chosen)
        rows = np.flatnonzero(chosen | extra)
        ran_on[group.name] = rows
        outputs[group.name] = np.full((len(top), len(members)), np.nan)
        widened |= extra
        if len(rows) == 0:
            continue
        local = run_specialist(group.name, rows)
        outputs[group.name][rows] = local
        fine[np.ix_(rows, members)] = coarse_probs[rows, coarse][:, None] * local
        on_top = chosen[rows]
        labels[rows[on_top]] = np.asarray(members)[local[on_top].argmax(1)]
    labels[widened] = fine[widened].argmax(1)
    return Routed(labels=labels, probs=fine, ran_on=ran_on, specialist_probs=outputs)


def stacking_features(hierarchy: Hierarchy, coarse_probs: np.ndarray,
                      specialist_probs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Log-probabilities of every stage side by side (every head's, with heads): the logistic
    regression's input."""
    parts = [coarse_probs] + [specialist_probs[part.name] for part in hierarchy.specialist_parts(specialist_probs)]
    return np.log(np.clip(np.concatenate(parts, axis=1), 1e-7, 1.0))


@dataclass(frozen=True, eq=False)
class Stacking:
    """A multinomial logistic regression over stage outputs, kept as plain arrays (no pickle)."""

    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    num_classes: int

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, num_classes: int, c: float = 1.0) -> "Stacking":
        model = LogisticRegression(C=c, max_iter=2000).fit(features, labels)
        return cls(coef=model.coef_, intercept=model.intercept_, classes=model.classes_, num_classes=num_classes)

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities over all classes (a class absent when fitting gets 0)."""
        scores = features @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # scikit-learn's binary form: one logit for the second class
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        scores -= scores.max(1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(1, keepdims=True)
        full = np.zeros((len(features), self.num_classes))
        full[:, self.classes] = probs
        return full

    def to_json(self) -> str:
        return json.dumps({"kind": "stacking", "num_classes": self.num_classes, "classes": self.classes.tolist(),
                           "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "combiner.json") -> "Stacking":
        try:
            payload = json.loads(text)
            return cls(coef=np.asarray(payload["coef"], dtype=np.float64),
                       intercept=np.asarray(payload["intercept"], dtype=np.float64),
                       classes=np.asarray(payload["classes"], dtype=np.int64),
                       num_classes=int(payload["num_classes"]))
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{source} is not a stacking combiner: {error}") from None
