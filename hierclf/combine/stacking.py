"""Stacking: a multinomial logistic regression (scikit-learn) on every stage's out-of-fold
log-probabilities, kept as plain arrays in combiner.json (nothing pickled)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch

from hierclf.combine.arithmetic import StackingGraph, clipped_log, tensor
from hierclf.combine.base import Combiner, StageOutputs
from hierclf.errors import RunError

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy
    from hierclf.readback import ReadBack
    from hierclf.recipe.schema import CombineConfig


def stacking_features(coarse_probs: np.ndarray, specialist_probs: Sequence[np.ndarray]) -> np.ndarray:
    """Log-probabilities of every stage side by side: the logistic regression's input (as the
    module computes it)."""
    return clipped_log(tensor(np.concatenate([coarse_probs, *specialist_probs], axis=1))).numpy()


class Stacking(Combiner):
    name = "stacking"
    fits = True

    def __init__(self, c: float = 1.0):
        self.c = c
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.classes: np.ndarray | None = None
        self.num_classes = 0

    @classmethod
    def from_config(cls, config: CombineConfig) -> "Stacking":
        return cls(config.stacking_c)

    def fit(self, hierarchy: Hierarchy, outputs: StageOutputs) -> "Stacking":
        from sklearn.linear_model import LogisticRegression

        features = stacking_features(outputs.coarse_probs, list(outputs.specialist_probs.values()))
        model = LogisticRegression(C=self.c, max_iter=2000).fit(features, outputs.labels)
        self.coef, self.intercept, self.classes = model.coef_, model.intercept_, model.classes_
        self.num_classes = hierarchy.num_classes
        return self

    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> StackingGraph:
        return self._graph(hierarchy.coarse_layout.width
                           + sum(term.width for term in hierarchy.terms if term.part in parts))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probabilities over all classes from `stacking_features` (a class absent when fitting gets 0)."""
        with torch.no_grad():
            return self._graph(features.shape[1]).regression(tensor(features)).numpy()

    def _graph(self, width: int) -> StackingGraph:
        """The regression, refused when the stages give another number of features than it was fit on."""
        if self.coef is None:
            raise RunError("the stacking combiner is not fit yet")
        if width != self.coef.shape[1]:
            raise RunError(f"the stacking combiner was fit on {self.coef.shape[1]} features, but the stages give "
                           f"{width}; fit it again (hierclf fit-fine)")
        return StackingGraph(self.coef, self.intercept, self.classes, self.num_classes)

    def settings(self) -> dict[str, Any]:
        return {"c": self.c}

    def state(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "classes": self.classes.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept.tolist()}

    def load_state(self, state: Mapping[str, Any], check: ReadBack, hierarchy: Hierarchy) -> "Stacking":
        """The regression's arrays, their shapes checked against each other and the run's classes."""
        self.num_classes = check.number(check.field(state, "num_classes", "stacking"), "stacking.num_classes",
                                        whole=True, lo=hierarchy.num_classes, hi=hierarchy.num_classes)
        classes = check.numbers(check.field(state, "classes", "stacking"), "stacking.classes", whole=True, lo=0,
                                hi=self.num_classes - 1)
        intercept = check.numbers(check.field(state, "intercept", "stacking"), "stacking.intercept")
        rows = check.field(state, "coef", "stacking")
        if not isinstance(rows, list) or not rows:
            check.fail("stacking.coef is not a list of rows")
        width = len(rows[0]) if isinstance(rows[0], list) else 0
        coef = [check.numbers(row, f"stacking.coef[{index}]", width) for index, row in enumerate(rows)]
        binary = len(classes) == 2 and len(coef) == len(intercept) == 1
        if len(classes) < 2 or len(set(classes)) != len(classes) or not (
                binary or len(coef) == len(intercept) == len(classes)):
            check.fail(f"stacking has {len(classes)} classes, {len(coef)} coefficient rows and {len(intercept)} "
                       f"intercepts, which do not fit together")
        self.classes = np.asarray(classes, dtype=np.int64)
        self.coef, self.intercept = np.asarray(coef, dtype=np.float64), np.asarray(intercept, dtype=np.float64)
        return self
