"""Every combiner by name: the recipe's combine.method, `predict --combiner`, evaluate's pipelines.

- `flat`: a run without groups or heads; the coarse stage's probabilities are the answer.
- `product`: the product rule, exact; every specialist runs on every image.
- `routed`: the coarse argmax decides; a specialist runs only on the images routed to it.
- `stacking`: a logistic regression on the stages' log-probabilities, fit on out-of-fold outputs.
- `blend`: over a flat run, a weighted geometric mean of its within-group distribution and the
  specialist's, the weight fit per group on out-of-fold outputs.
- `coarse`: the coarse stage alone, where it gives every class itself (heads, groups over a flat
  run): the pipeline each specialist must beat.

Which combiners a run may use follows from its hierarchy's terms (`Combiner.applies_to`), in
this order, the preferred first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hierclf.combine.base import Combiner
from hierclf.combine.blend import Blend
from hierclf.combine.product import CoarseAlone, Flat, Product
from hierclf.combine.routed import Routed
from hierclf.combine.stacking import Stacking
from hierclf.errors import RecipeError

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy

COMBINERS: dict[str, type[Combiner]] = {cls.name: cls for cls in (Flat, Product, Routed, Stacking, Blend, CoarseAlone)}
"""Every combiner by name, in order of preference."""


def check_combiner_name(requested: str, where: str) -> None:
    """Refuse a name that is no combiner; `where` names the key or option, with its value."""
    if requested not in COMBINERS:
        raise RecipeError(f"{where}: no such combiner; combiners are {', '.join(COMBINERS)}")


def applicable(hierarchy: Hierarchy) -> tuple[str, ...]:
    """The combiners that can combine `hierarchy`'s stages, the preferred first."""
    return tuple(name for name, cls in COMBINERS.items() if cls.applies_to(hierarchy))


def choose_combiner(hierarchy: Hierarchy, requested: str, where: str) -> str:
    """The combiner to use when `requested` is asked for: a flat run has one pipeline whatever is
    asked; one that cannot combine this hierarchy is refused naming `where` (the key or option
    that asked, with its value) and what the run combines by."""
    check_combiner_name(requested, where)
    if hierarchy.is_flat:
        return "flat"
    names = applicable(hierarchy)
    if requested not in names:
        raise RecipeError(f"{where}: {COMBINERS[requested].needs}; a run with {hierarchy.describe()} combines by "
                          f"{', '.join(names)}")
    return requested


def combiner_doc() -> str:
    """The recipe reference's text for combine.method, from the registry."""
    return "; ".join(f"{name}: {cls.summary}" for name, cls in COMBINERS.items()) + "."
