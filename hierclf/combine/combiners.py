"""Combiners: from every stage's probabilities to final labels, one registry from name to class.

- `flat`: a run without groups or heads; the coarse stage's probabilities are the answer.
- `product`: P(y) = P(group of y) · P(y | group), exact; every specialist runs on every image
  (with attribute heads: the heads' outer product, a head specialist replacing its head).
- `routed`: the coarse argmax decides; a specialist runs only on the images routed to it.
- `stacking`: a logistic regression on the stages' log-probabilities, fit on out-of-fold outputs.
- `blend`: with a flat run as the coarse stage, each group's final distribution is a weighted
  geometric mean of the flat model's within-group distribution and the specialist's, the weight
  fit per group on out-of-fold outputs; P(group) stays the flat model's.

A combiner that learns (`fits`) is fit once, on a run's out-of-fold outputs, when its last stage
finishes training, and kept as JSON in the run (combiner.json); `predict` only reads it, and
`evaluate` fits it anew fold by fold, so its own score is out-of-fold too. The hierarchy says
which combiners apply to it (`Hierarchy.combiners`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from hierclf.errors import RecipeError, RunError

SpecialistRunner = Callable[[str, np.ndarray], np.ndarray]
"""(part name, row indices) → that part's specialist probabilities for those rows."""


@dataclass(frozen=True, eq=False)
class StageOutputs:
    """Every stage's probabilities on the same rows (the specialists' by part name, in the
    hierarchy's order), and the rows' fine labels where a combiner is to be fit on them."""

    coarse_probs: np.ndarray
    specialist_probs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def subset(self, rows: np.ndarray) -> "StageOutputs":
        return StageOutputs(self.coarse_probs[rows], {name: p[rows] for name, p in self.specialist_probs.items()},
                            None if self.labels is None else self.labels[rows])

    def run_specialist(self, name: str, rows: np.ndarray) -> np.ndarray:
        return self.specialist_probs[name][rows]


@dataclass(frozen=True, eq=False)
class Combined:
    """Final probabilities and labels, each specialist's own probabilities (NaN where it did not
    run), and the rows each specialist ran on."""

    probs: np.ndarray
    labels: np.ndarray
    specialist_probs: dict[str, np.ndarray] = field(default_factory=dict)
    ran_on: dict[str, np.ndarray] = field(default_factory=dict)


class Combiner(ABC):
    """The shape every combiner has; `fit` does nothing for one that learns nothing."""

    name: ClassVar[str]
    summary: ClassVar[str]
    fits: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: Any) -> "Combiner":
        """The combiner as the recipe's [combine] section sets it up."""
        return cls()

    def fit(self, hierarchy: Any, outputs: StageOutputs) -> "Combiner":
        return self

    @abstractmethod
    def combine(self, hierarchy: Any, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        """Final labels for the rows of `coarse_probs`; `run_specialist(part, rows)` gives a part's
        specialist probabilities, asked only for the rows the combiner needs."""

    def settings(self) -> dict[str, Any]:
        """The recipe settings it was made with (what a fitted state depends on besides the data)."""
        return {}

    def state(self) -> dict[str, Any]:
        """What `fit` learned, as JSON-able values (nothing for a combiner that learns nothing)."""
        return {}

    def load_state(self, state: Mapping[str, Any], source: str) -> "Combiner":
        return self


def _everywhere(coarse_probs: np.ndarray, parts: Sequence[str], run_specialist: SpecialistRunner
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every specialist's probabilities on every row, and the rows each ran on (all of them)."""
    rows = np.arange(len(coarse_probs))
    return {name: run_specialist(name, rows) for name in parts}, {name: rows for name in parts}


class Flat(Combiner):
    name = "flat"
    summary = "a run without groups or heads: the coarse stage's probabilities as they are"

    def combine(self, hierarchy: Any, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        return Combined(probs=coarse_probs, labels=coarse_probs.argmax(1))


class Product(Combiner):
    name = "product"
    summary = ("P(class) = P(group) × P(class | group), every specialist on every image (with heads: the "
               "heads' product)")

    def combine(self, hierarchy: Any, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        local, ran_on = _everywhere(coarse_probs, parts, run_specialist)
        probs = hierarchy.product(coarse_probs, local)
        return Combined(probs=probs, labels=probs.argmax(1), specialist_probs=local, ran_on=ran_on)


class Routed(Combiner):
    name = "routed"
    summary = "the coarse argmax picks one specialist per image (groups only)"

    def __init__(self, threshold: float = 0.0):
        self.threshold = threshold

    @classmethod
    def from_config(cls, config: Any) -> "Routed":
        return cls(config.route_threshold)

    def combine(self, hierarchy: Any, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        return hierarchy.route(coarse_probs, run_specialist, threshold=self.threshold)


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, 1e-7, 1.0))


def _normalised_log(scores: np.ndarray) -> np.ndarray:
    """Log-probabilities from unnormalised log-scores, row by row."""
    scores = scores - scores.max(1, keepdims=True)
    return scores - np.log(np.exp(scores).sum(1, keepdims=True))


def stacking_features(coarse_probs: np.ndarray, specialist_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Log-probabilities of every stage side by side: the logistic regression's input."""
    return _log(np.concatenate([coarse_probs, *specialist_probs], axis=1))


class Stacking(Combiner):
    """A multinomial logistic regression over stage outputs, kept as plain arrays (no pickle)."""

    name = "stacking"
    summary = "a logistic regression on the stages' out-of-fold log-probabilities"
    fits = True

    def __init__(self, c: float = 1.0):
        self.c = c
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.classes: np.ndarray | None = None
        self.num_classes = 0

    @classmethod
    def from_config(cls, config: Any) -> "Stacking":
        return cls(config.stacking_c)

    def fit(self, hierarchy: Any, outputs: StageOutputs) -> "Stacking":
        from sklearn.linear_model import LogisticRegression

        features = stacking_features(outputs.coarse_probs, list(outputs.specialist_probs.values()))
        model = LogisticRegression(C=self.c, max_iter=2000).fit(features, outputs.labels)
        self.coef, self.intercept, self.classes = model.coef_, model.intercept_, model.classes_
        self.num_classes = hierarchy.num_classes
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities over all classes (a class absent when fitting gets 0)."""
        if self.coef is None:
            raise RunError("the stacking combiner is not fit yet")
        scores = features @ self.coef.T + self.intercept
        if self.coef.shape[0] == 1:  # scikit-learn's binary form: one logit for the second class
            scores = np.concatenate([np.zeros_like(scores), scores], axis=1)
        scores -= scores.max(1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(1, keepdims=True)
        full = np.zeros((len(features), self.num_classes))
        full[:, self.classes] = probs
        return full

    def combine(self, hierarchy: Any, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        local, ran_on = _everywhere(coarse_probs, parts, run_specialist)
        probs = self.predict_proba(stacking_features(coarse_probs, [local[name] for name in parts]))
        return Combined(probs=probs, labels=probs.argmax(1), specialist_probs=local, ran_on=ran_on)

    def settings(self) -> dict[str, Any]:
        return {"c": self.c}

    def state(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "classes": self.classes.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    def load_state(self, state: Mapping[str, Any], source: str) -> "Stacking":
        try:
            self.coef = np.asarray(state["coef"], dtype=np.float64)
            self.intercept = np.asarray(state["intercept"], dtype=np.float64)
            self.classes = np.asarray(state["classes"], dtype=np.int64)
            self.num_classes = int(state["num_classes"])
        except (ValueError, KeyError, TypeError) as error:
            raise RunError(f"{source} is not a stacking combiner: {error}") from None
        return self


class Blend(Combiner):
    """Per group, P(y | group) ∝ q(y)^w · s(y)^(1−w), q the flat coarse model's distribution within
    the group and s the specialist's; w is chosen on a grid to minimise the out-of-fold log-loss
    of the group's own rows, so a specialist that adds nothing gets w = 1 (the flat model alone)
    and one that knows better gets w near 0."""

    name = "blend"
    summary = ("with a flat run as coarse stage (hierarchy.coarse_run): within each group, a weighted geometric "
               "mean of the flat model's and the specialist's class probabilities, the weight fit per group on "
               "out-of-fold outputs")
    fits = True
    GRID = np.linspace(0.0, 1.0, 21)

    def __init__(self) -> None:
        self.weights: dict[str, float] | None = None

    def fit(self, hierarchy: Any, outputs: StageOutputs) -> "Blend":
        self.weights = {}
        for name, specialist in outputs.specialist_probs.items():
            targets = hierarchy.specialist_targets(hierarchy.group(name), outputs.labels)[:, 0]
            rows = np.flatnonzero(targets >= 0)
            if len(rows) == 0:
                self.weights[name] = 1.0
                continue
            flat, own = _log(hierarchy.within(outputs.coarse_probs[rows], name)), _log(specialist[rows])
            losses = [-_normalised_log(w * flat + (1 - w) * own)[np.arange(len(rows)), targets[rows]].mean()
                      for w in self.GRID]
            self.weights[name] = float(self.GRID[int(np.argmin(losses))])
        return self

    def blended(self, hierarchy: Any, coarse_probs: np.ndarray, local: Mapping[str, np.ndarray]
                ) -> dict[str, np.ndarray]:
        """Each group's blended distribution over its members."""
        if self.weights is None:
            raise RunError("the blend combiner is not fit yet")
        return {name: np.exp(_normalised_log(self.weights[name] * _log(hierarchy.within(coarse_probs, name))
                                             + (1 - self.weights[name]) * _log(probs)))
                for name, probs in local.items()}

    def combine(self, hierarchy: Any, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        local, ran_on = _everywhere(coarse_probs, parts, run_specialist)
        probs = hierarchy.product(coarse_probs, self.blended(hierarchy, coarse_probs, local))
        return Combined(probs=probs, labels=probs.argmax(1), specialist_probs=local, ran_on=ran_on)

    def state(self) -> dict[str, Any]:
        return {"weights": dict(self.weights or {})}

    def load_state(self, state: Mapping[str, Any], source: str) -> "Blend":
        try:
            self.weights = {str(name): float(weight) for name, weight in state["weights"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise RunError(f"{source} is not a blend combiner: {error}") from None
        return self


COMBINERS: dict[str, type[Combiner]] = {cls.name: cls for cls in (Flat, Product, Routed, Stacking, Blend)}
"""Every combiner by name: the recipe's combine.method, `predict --combiner`, evaluate's pipelines."""


def check_combiner_name(requested: str, where: str) -> None:
    """Refuse a name that is no combiner; `where` names the key or option, with its value."""
    if requested not in COMBINERS:
        raise RecipeError(f"{where}: no such combiner; combiners are {', '.join(COMBINERS)}")


def combiner_doc() -> str:
    """The recipe reference's text for combine.method, from the registry."""
    return "; ".join(f"{name}: {cls.summary}" for name, cls in COMBINERS.items()) + "."
