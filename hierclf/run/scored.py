"""What a run scored on labelled images outside its training data: each `hierclf predict` whose
input carries labels adds one line to the run's scored.jsonl (the only file predict writes into a
run folder), so `hierclf runs` can set the test score beside the out-of-fold one. A run folder
predict may not write to keeps its figures unrecorded, and says so."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

SCORED = "scored.jsonl"


def record_score(run_root: Path, entry: dict[str, Any]) -> bool:
    """Append `entry` (with the time) as one line, in one write, as metrics.jsonl is; False when
    the run folder cannot be written to."""
    line = json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), **entry}, ensure_ascii=False) + "\n"
    try:
        with (run_root / SCORED).open("a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError:
        return False
    return True


def read_scores(run_root: Path) -> list[dict[str, Any]]:
    """Every recorded score, oldest first; a line cut short or edited into something else is left out."""
    path = run_root / SCORED
    if not path.is_file():
        return []
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("macro_f1"), (int, float)):
            found.append(entry)
    return found
