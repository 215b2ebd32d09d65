"""Values read back from the library's own files (calibration, fitted combiners, resume state,
locks, stage and run metadata) are checked before use, as a user's input is: such a file may be
edited, copied in from another run, or damaged, and a temperature of 0 or a pid that is no number
must end in one line naming the file and the remedy, never in NaN predictions or a traceback."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NoReturn

from hierclf.errors import RunError


@dataclass(frozen=True)
class ReadBack:
    """One file being read back (`source`: its path), and what to do when it is damaged (`remedy`)."""

    source: str
    remedy: str

    def fail(self, problem: str) -> NoReturn:
        raise RunError(f"{self.source}: {problem}; {self.remedy}")

    def table(self, value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(f"{name} is {_shown(value)}, not a table")
        return value

    def field(self, table: Any, key: str, name: str = "") -> Any:
        """`table[key]`, refused when the table or the key is missing."""
        table = self.table(table, name or "the file")
        if key not in table:
            self.fail(f"{(name + '.') if name else ''}{key} is missing")
        return table[key]

    def text(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            self.fail(f"{name} is {_shown(value)}, not text")
        return value

    def number(self, value: Any, name: str, *, whole: bool = False, lo: float | None = None,
               gt: float | None = None, hi: float | None = None) -> Any:
        """A finite number (an integer with `whole`) within the bounds given."""
        kinds = (int,) if whole else (int, float)
        if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
            self.fail(f"{name} is {_shown(value)}, not a finite {'whole ' if whole else ''}number")
        if (lo is not None and value < lo) or (gt is not None and value <= gt) or (hi is not None and value > hi):
            bounds = " and ".join(text for text, bound in ((f">= {lo}", lo), (f"> {gt}", gt), (f"<= {hi}", hi))
                                  if bound is not None)
            self.fail(f"{name} is {_shown(value)}, expected {bounds}")
        return value

    def numbers(self, value: Any, name: str, length: int | None = None, **bounds: Any) -> list[Any]:
        """A list of numbers, each as `number` checks it, of `length` items when given."""
        if not isinstance(value, list):
            self.fail(f"{name} is {_shown(value)}, not a list")
        if length is not None and len(value) != length:
            self.fail(f"{name} holds {len(value)} values, expected {length}")
        return [self.number(item, f"{name}[{index}]", **bounds) for index, item in enumerate(value)]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def parse_json(text: str) -> Any:
    """`json.loads`, with values nested too deep to be any file of ours ([[[[…]]]] thousands deep)
    a ValueError, as other damage is (json itself raises RecursionError)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("its values are nested too deep to be a file hierclf wrote") from None
