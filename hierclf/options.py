"""The command line's value types and list parsers: every number a user types is checked here
once, in range and finite (click's own ranges let NaN through, since every comparison with it is
false), so a command never runs with a budget of NaN or a weight of infinity; and how a command
spells the parameters the library's messages name."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import click

from hierclf.errors import HierclfError


class FiniteRange(click.FloatRange):
    """click.FloatRange that also refuses NaN and infinity."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number", param, ctx)
        return number


class FoldChoice(click.ParamType):
    """A fold number, or "next"."""

    name = "fold"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "next":
            return value
        if str(value).isdigit():
            return int(value)
        self.fail(f"{value!r}: expected a fold number or next", param, ctx)


def parse_seeds(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts) or len(set(parts)) < len(parts):
        raise HierclfError(f"--seeds {text!r}: expected distinct whole numbers, as 0,1,2")
    return [int(part) for part in parts]


def parse_weights(text: str | None) -> list[float] | None:
    """Each run's weight in a vote (their range is checked where they are used, `predict_runs`)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise HierclfError(f"--weights {text!r}: expected numbers, as 1,1,2") from None


def parse_control(text: str) -> list[Path]:
    """One --control: a run folder, or several joined by commas (an ensemble); an empty one (an
    unset shell variable) is refused, not an ensemble of nothing."""
    runs = [Path(part.strip()) for part in text.split(",") if part.strip()]
    if not runs:
        raise HierclfError(f"--control {text!r}: expected a run folder, or several joined by commas (RUN,RUN)")
    return runs


def parse_folds(text: str | None) -> list[int] | None:
    """Fold numbers, as 0,2 (whether the run has them is checked where they are used, `StageModels`)."""
    if text is None:
        return None
    try:
        folds = [int(part) for part in text.split(",")]
    except ValueError:
        folds = []
    if not folds or min(folds) < 0:
        raise HierclfError(f"--folds {text!r}: expected fold numbers, as 0,2")
    return folds


def spelling(group: click.Group, ctx: click.Context) -> Callable[[str], str]:
    """How the command that ran spells a parameter a message names (`errors.option`): its option
    (--set for overrides), its argument (RUN), else --name."""
    command = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    spelt = {param.name: max(param.opts, key=len) if isinstance(param, click.Option) else param.human_readable_name
             for param in (command.params if command else [])}
    return lambda name: spelt.get(name, "--" + name.replace("_", "-"))
