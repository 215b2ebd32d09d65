"""What a run scored on labelled images outside its training data: each `hierclf predict` whose
input carries labels adds one line to the run's scored.jsonl (the only file predict writes into a
run folder), so `hierclf runs` can set the test score beside the out-of-fold one. A run folder
predict may not write to keeps its figures unrecorded, and says so."""
from __future__ import annotations

import errno
import json
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

from hierclf.errors import RunError
from hierclf.readback import parse_json

SCORED = "scored.jsonl"


def record_score(run_root: Path, entry: dict[str, Any]) -> str | None:
    """Append `entry` (with the time) as one line, in one write, as metrics.jsonl is. None once
    recorded, else why it was not (said in one line by predict): the run folder cannot be written
    to, or scored.jsonl is no regular file inside it (a symbolic link out of the run, a FIFO that
    would block for good, a device), which is left as it is."""
    path = run_root / SCORED
    line = json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), **entry}, ensure_ascii=False) + "\n"
    try:  # no link followed, and a FIFO with no reader refused at once instead of waiting for one
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"{path} is a symbolic link, not a file of the run"
        if error.errno == errno.ENXIO:
            return f"{path} is a FIFO, not a regular file"
        return f"{run_root} cannot be written to ({error.strerror})"
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return f"{path} is not a regular file"
        os.write(handle, line.encode("utf-8"))
    except OSError as error:
        return f"{path} cannot be written to ({error.strerror})"
    finally:
        os.close(handle)
    return None


LIMIT = 64 << 20
"""The most bytes a scored.jsonl may hold: about 200,000 predictions' lines."""


def read_scores(run_root: Path) -> list[dict[str, Any]]:
    """Every recorded score, oldest first; a line cut short, edited into something else, or whose
    scores are not shares (0 to 1) is left out. A file that is no regular file, or larger than
    LIMIT, is refused (RunError), so one damaged run is named, not read until memory runs out."""
    path = run_root / SCORED
    if not path.exists() and not path.is_symlink():
        return []
    try:
        status = os.lstat(path)
    except OSError as error:
        raise RunError(f"{path} cannot be read ({error.strerror})") from None
    if not stat.S_ISREG(status.st_mode):
        raise RunError(f"{path} is not a regular file; delete it to record scores again")
    if status.st_size > LIMIT:
        raise RunError(f"{path} holds {status.st_size >> 20:,} MB, more than the {LIMIT >> 20} MB a score record "
                       f"may; delete it to record scores again")
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = parse_json(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and all(_share(entry.get(key)) for key in SHARES if key in entry) \
                and "macro_f1" in entry:
            found.append(entry)
    return found


SHARES = ("macro_f1", "accuracy")
"""The scores a line holds, each a share."""


def _share(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and 0.0 <= value <= 1.0
