"""The shape every combiner has, and what combiners pass around: every stage's probabilities on
the same rows (`StageOutputs`) and the final outcome (`Combined`).

A combiner that learns (`fits`) is fit once, on a run's out-of-fold outputs, when its last stage
finishes training, and kept as JSON in the run (combiner.json); `predict` only reads it, and
`evaluate` fits it anew fold by fold, so its own score is out-of-fold too. Combiners compute on
the hierarchy's terms (`hierclf.hierarchy.protocol`) and never ask which kind it is, and all
their arithmetic is their torch module (`hierclf.combine.arithmetic`), which `hierclf export`
traces into its graph as it is.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from hierclf.combine.arithmetic import on_arrays

if TYPE_CHECKING:
    import torch

    from hierclf.readback import ReadBack
    from hierclf.hierarchy.protocol import Hierarchy
    from hierclf.recipe.schema import CombineConfig

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
    """A way from stage outputs to final labels; `fit` does nothing for one that learns nothing.

    `applies_to` says which hierarchies it can combine (`names.COMBINER_WORDS` says so in words,
    for the message that refuses it elsewhere)."""

    name: ClassVar[str]
    fits: ClassVar[bool] = False
    uses_specialists: ClassVar[bool] = True
    """False for one that never asks a specialist: predict and export then leave them unloaded."""

    @classmethod
    def from_config(cls, config: CombineConfig) -> "Combiner":
        """The combiner as the recipe's [combine] section sets it up."""
        return cls()

    @classmethod
    def applies_to(cls, hierarchy: Hierarchy) -> bool:
        """Whether it can combine the stages of `hierarchy` (every combiner but `flat` needs parts)."""
        return not hierarchy.is_flat

    def fit(self, hierarchy: Hierarchy, outputs: StageOutputs) -> "Combiner":
        return self

    @abstractmethod
    def module(self, hierarchy: Hierarchy, parts: Sequence[str]) -> torch.nn.Module:
        """Its arithmetic, as fit: (coarse probabilities, each of `parts`' specialist probabilities,
        in that order) → (final probabilities, labels)."""

    def combine(self, hierarchy: Hierarchy, coarse_probs: np.ndarray, parts: Sequence[str],
                run_specialist: SpecialistRunner) -> Combined:
        """Final labels for the rows of `coarse_probs`; `run_specialist(part, rows)` gives a part's
        specialist probabilities, asked only for the rows the combiner needs (here every row)."""
        rows = np.arange(len(coarse_probs))
        local = {name: run_specialist(name, rows) for name in parts}
        probs, labels = on_arrays(self.module(hierarchy, parts), coarse_probs, list(local.values()))
        return Combined(probs=probs, labels=labels, specialist_probs=local, ran_on={name: rows for name in parts})

    def settings(self) -> dict[str, Any]:
        """The recipe settings it was made with (what a fitted state depends on besides the data)."""
        return {}

    def state(self) -> dict[str, Any]:
        """What `fit` learned, as JSON-able values (nothing for a combiner that learns nothing)."""
        return {}

    def load_state(self, state: Mapping[str, Any], check: ReadBack, hierarchy: Hierarchy) -> "Combiner":
        """Put back what `state()` gave, every value checked (`check` names the file and the
        remedy) against `hierarchy`, the run's."""
        return self
