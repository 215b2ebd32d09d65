"""What one stage of a run is: the models of its folds, what they learn and what they output.

A hierarchy describes its stages (`Hierarchy.coarse_stage`, `Hierarchy.specialist_stage`), and
training, prediction and evaluation read them, so none of those asks which kind of hierarchy it
is handling: a flat, grouped or attribute-head coarse stage and every specialist look alike.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from hierclf.hierarchy.layout import OutputLayout
from hierclf.recipe.schema import HeadConfig, LossConfig, StageConfig

NOT_IN_STAGE = -1
"""Target of a row that a stage neither trains nor is scored on (a group specialist's other classes)."""


def in_stage(targets: np.ndarray) -> np.ndarray:
    """Rows a stage trains and is scored on: every block's target known (targets N×H)."""
    return (targets != NOT_IN_STAGE).all(1)


def folder_name(name: str) -> str:
    """A part's name as a folder name (class names may hold '/', as 'T-shirt/top')."""
    return re.sub(r"[^\w.+-]+", "_", name).strip("._") or "group"


@dataclass(frozen=True)
class Stage:
    """One stage: its folder under the run, its recipe table, its keys and its outputs.

    `losses` holds each output block's loss keys (for one block, the stage's own; with attribute
    heads, each head's [heads.<name>]) and `loss_keys` the recipe keys naming them in messages.
    `targets` maps the fine labels to the stage's targets (N×H, NOT_IN_STAGE where a row is not
    the stage's). `coarse_backbone` says where, in the coarse model's weights of the same fold,
    a backbone for this stage sits, and `coarse_rows` which of the coarse classifier's rows start
    this stage's head (init_from_coarse from a flat coarse stage: the group's classes), so the
    specialist starts as the flat model's within-group distribution."""

    name: str
    key: str
    config: StageConfig
    layout: OutputLayout
    losses: tuple[HeadConfig, ...]
    loss_keys: tuple[str, ...]
    targets: Callable[[np.ndarray], np.ndarray] = field(compare=False, repr=False)
    separate: bool = False
    coarse_backbone: str = ""
    coarse_rows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.losses) == len(self.loss_keys) == len(self.layout.blocks):
            raise ValueError(f"stage {self.name}: one loss per output block is needed")


def single_loss(config: LossConfig) -> HeadConfig:
    """The loss of a stage with one output block: its own loss keys, weight 1 throughout."""
    return HeadConfig(**{item.name: getattr(config, item.name) for item in dataclasses.fields(LossConfig)})
