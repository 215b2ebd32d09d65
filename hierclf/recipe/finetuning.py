"""The keys a stage takes when it starts from pretrained weights (`weights` or `pretrained`) and
its recipe does not set them. Chosen by measurement (benchmarks/finetune_grid.py; the grids and
their figures are in docs/benchmarks.md, "Fine-tuning fitted to the data" and "Fine-tuning that
keeps what the backbone knows"), not by habit: with the new head at zero, keeping BatchNorm's
loaded statistics gained 1.5-1.9 points on two colour photo sets and collapsed the network on
grey clothes and small faces at their rates, so the mode is chosen on the stage's data
(batchnorm = "auto", two short trials); a head-only start, LP-FT and a slower backbone were
level or worse on average over four sets; and the check against the linear probe is on. A key
the recipe sets, in the stage's table or one it inherits from, is never replaced.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Collection

from hierclf.recipe.schema import ModelConfig, StageConfig

AUTO = "auto"
"""lr = "auto" (and batchnorm = "auto"): chosen on the stage's data (train/auto.py)."""
FINE_TUNING: dict[str, Any] = {"probe_check": True, "batchnorm": AUTO}
RATE_LADDERS = {"adam": (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
                "sgd": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)}
"""The rates lr = "auto" may try, by optimiser family (Adam's updates do not grow with the gradient,
SGD's do)."""
FIRST_RATES = {"adam": (1e-4, 3e-4, 1e-3), "sgd": (3e-3, 1e-2, 3e-2)}
"""The three it tries first: where the fine-tuning grids' best rates lay."""


def starts_pretrained(config: ModelConfig) -> bool:
    """Whether a stage starts from pretrained weights (a local file, or timm's)."""
    return bool(config.weights or config.pretrained)


def starts_trained(config: ModelConfig) -> bool:
    """Whether a stage's model starts from trained weights: pretrained ones, or the coarse model's
    of the same fold (init_from_coarse). Its new heads start at zero, and its folds are guarded."""
    return starts_pretrained(config) or config.init_from_coarse


def fine_tuned(config: StageConfig, explicit: Collection[str]) -> StageConfig:
    """`config` with the fine-tuning defaults in every key not in `explicit` (those its recipe
    sets), when it starts from pretrained weights; else as it is. The head-only epochs leave at
    least one that trains the backbone (none in a one-epoch run)."""
    if not starts_pretrained(config):
        return config
    defaults = {key: value for key, value in FINE_TUNING.items() if key not in explicit}
    if "freeze_epochs" in defaults:
        defaults["freeze_epochs"] = min(defaults["freeze_epochs"], config.epochs - 1)
    return dataclasses.replace(config, **defaults)
