"""Input files read within bounds: a path that is no regular file (/dev/zero, a FIFO, a folder)
or that is larger than what its kind ever needs is refused naming it, before a byte is read, so
a mistyped path cannot make the command read until the machine runs out of memory."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from hierclf.errors import DataError

MB = 1 << 20

LIMITS = {"CSV": 2048 * MB, "recipe": 4 * MB, "run file": 1024 * MB, "image": 1024 * MB,
          "dataset file": 512 * MB, "weights file": 65536 * MB}
"""The most bytes a file of each kind may hold: a CSV of tens of millions of rows, a recipe of a
few hundred lines, a run's JSON and NumPy files, one image, one of the Fashion-MNIST idx files
(and what it unpacks to), a checkpoint of the largest models."""


def checked_input(path: str | Path, kind: str) -> Path:
    """`path`, refused (DataError) when it is missing, not a regular file, or over LIMITS[kind]."""
    path = Path(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{kind} {path} does not exist") from None
    except OSError as error:
        raise DataError(f"{kind} {path} cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        what = "a folder" if stat.S_ISDIR(status.st_mode) else "a device, pipe or socket"
        raise DataError(f"{kind} {path} is {what}, not a file")
    if status.st_size > LIMITS[kind]:
        raise DataError(f"{kind} {path} holds {status.st_size / MB:,.0f} MB, more than the {LIMITS[kind] // MB:,} MB "
                        f"a {kind} may; is it the right file?")
    return path
