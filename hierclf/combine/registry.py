"""Every combiner by name (`recipe/combiners.py` holds the names and their words, without torch): the
recipe's combine.method, `predict --combiner`, evaluate's pipelines. Which combiners a run may use
follows from its hierarchy's terms (`Combiner.applies_to`), in the names' order, the preferred
first.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from hierclf.combine.base import Combiner
from hierclf.combine.blend import Blend
from hierclf.recipe.combiners import COMBINER_NAMES, COMBINER_WORDS, check_combiner_name
from hierclf.combine.product import CoarseAlone, Flat, Product
from hierclf.combine.routed import Routed
from hierclf.combine.stacking import Stacking
from hierclf.errors import RecipeError

if TYPE_CHECKING:
    from hierclf.hierarchy.protocol import Hierarchy

COMBINERS: dict[str, type[Combiner]] = {cls.name: cls for cls in sorted(
    (Flat, Product, Routed, Stacking, Blend, CoarseAlone), key=lambda cls: COMBINER_NAMES.index(cls.name))}
"""Every combiner by name, in order of preference."""


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
        raise RecipeError(f"{where}: {COMBINER_WORDS[requested].needs}; a run with {hierarchy.describe()} combines "
                          f"by {', '.join(names)}")
    return requested
