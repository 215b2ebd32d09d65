"""One recipe key as a dataclass field: its default, and in its metadata the documentation and
bounds that validation (`recipe/coerce`), error messages and the docs' key tables all read."""
from __future__ import annotations

from dataclasses import field
from typing import Any


def setting(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
            gt: float | None = None, lt: float | None = None, path: bool = False,
            runtime: bool = False) -> Any:
    """A recipe key. `path` keys resolve against the recipe's folder; `runtime` keys
    (workers, device) change how a run executes, not what it learns."""
    metadata = dict(doc=doc, lo=lo, hi=hi, gt=gt, lt=lt, path=path, runtime=runtime)
    if isinstance(default, dict):  # a table-valued key; a dataclass default must not be shared
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)
