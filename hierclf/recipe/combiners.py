"""The combiners' names and, in words, what each does and what it needs: all the recipe schema
and the command line ask of them, without torch (the combiners compute with torch modules;
`combine/registry.COMBINERS` holds them under these names, in this order, the preferred first).

- `flat`: a run without groups or heads; the coarse stage's probabilities are the answer.
- `product`: the product rule, exact; every specialist runs on every image.
- `routed`: the coarse argmax decides; a specialist runs only on the images routed to it.
- `stacking`: a logistic regression on the stages' log-probabilities, fit on out-of-fold outputs.
- `blend`: over a flat run, a weighted geometric mean of its within-group distribution and the
  specialist's, the weight fit per group on out-of-fold outputs.
- `coarse`: the coarse stage alone, where it gives every class itself (heads, groups over a flat
  run): the pipeline each specialist must beat.
"""
from __future__ import annotations

from dataclasses import dataclass

from hierclf.errors import RecipeError


@dataclass(frozen=True)
class CombinerWords:
    summary: str
    """What it does, for the recipe reference."""
    needs: str
    """What a run must have for it, for the message that refuses it."""


COMBINER_WORDS = {
    "flat": CombinerWords("a run without groups or heads: the coarse stage's probabilities as they are",
                          "flat is the pipeline of a run without groups or heads"),
    "product": CombinerWords("P(class) = P(group) × P(class | group), every specialist on every image (with heads: "
                             "the heads' product)", "product needs groups or heads"),
    "routed": CombinerWords("the coarse argmax picks one specialist per image (groups only)",
                            "routed needs groups (with attribute heads there is nothing to route)"),
    "stacking": CombinerWords("a logistic regression on the stages' out-of-fold log-probabilities",
                              "stacking needs groups or heads"),
    "blend": CombinerWords("with a flat run as coarse stage (hierarchy.coarse_run): within each group, a weighted "
                           "geometric mean of the flat model's and the specialist's class probabilities, the weight "
                           "fit per group on out-of-fold outputs",
                           "blend needs groups over a flat run (hierarchy.coarse_run)"),
    "coarse": CombinerWords("the coarse stage alone, its specialists left out (heads, or groups over a flat run): "
                            "what the specialists are measured against",
                            "coarse needs a coarse stage that gives every class itself (heads, or groups over a flat "
                            "run)"),
}
COMBINER_NAMES = tuple(COMBINER_WORDS)
"""Every combiner's name, in order of preference."""


def check_combiner_name(requested: str, where: str) -> None:
    """Refuse a name that is no combiner; `where` names the key or option, with its value."""
    if requested not in COMBINER_WORDS:
        raise RecipeError(f"{where}: no such combiner; combiners are {', '.join(COMBINER_NAMES)}")


def combiner_doc() -> str:
    """The recipe reference's text for combine.method."""
    return "; ".join(f"{name}: {words.summary}" for name, words in COMBINER_WORDS.items()) + "."
