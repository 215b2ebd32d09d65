"""Prediction in shards: each of N workers (anywhere, or the processes torchrun started) predicts
every N-th image into a part file, and the one that finds every part written joins them into the
output in input order. A library user shards the same way:

    shard = Shard(0, 4)
    write_shard(out, shard, predict_runs(runs, shard.rows(items)), origin=shard_origin(items, runs))

Each part's name carries a digest of what it was computed from (the whole input, the runs, the
options), so a part an earlier attempt left for another input or other options is never joined:
it is removed, and the shard that wrote it must run again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hierclf.data import Items
from hierclf.errors import HierclfError, InUseError, option
from hierclf.predict.output import Predictions, write_predictions
from hierclf.run.files import write_text
from hierclf.run.locks import holding
from hierclf.runtime.devices import resolve_device
from hierclf.runtime.processes import started

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: rows index, index + count, index + 2·count, …"""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise HierclfError(f"shard {self.index} of {self.count}: expected 0 <= I < N")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`I/N`, as `--shard 0/4` writes it."""
        index, _, count = text.partition("/")
        digits = index.isdigit() and count.isdigit() and len(count) <= 18  # int() of a longer text costs, or fails
        if not (digits and int(index) < int(count)):
            raise HierclfError(f"{option('shard')} {text!r}: expected I/N with 0 <= I < N, as 0/4")
        return cls(int(index), int(count))

    def rows(self, items: Items) -> Items:
        """This shard's rows of `items`; more shards than rows are refused, so the parts to join
        are never more than the rows (memory and files do not grow with N)."""
        if self.count > len(items):
            raise HierclfError(f"{option('shard')} {self.index}/{self.count}: the input holds {len(items)} image"
                               f"{'s' if len(items) != 1 else ''}, so it splits into at most {len(items)} shards")
        return items.subset(list(range(self.index, len(items), self.count)))

    def part(self, out: Path, origin: str) -> Path:
        """Where this shard writes its rows: OUT.part-<index>-of-<count>.<origin>."""
        return out.with_name(f"{out.name}.part-{self.index}-of-{self.count}.{origin}")


def shard_origin(items: Items, runs: Sequence[Any], **options: Any) -> str:
    """A short digest of what a sharded prediction is computed from: every row of the whole
    input (ids and files, in order), the runs (their folders), and any options that change the
    output (combiner, TTA, weights…). Every shard of one prediction gets the same.

    Args:
        items: the whole input, before `Shard.rows` takes a shard of it.
        runs: the runs (folders or `Run`s) predicting it.
        options: whatever else changes the predictions, by name.

    Returns:
        12 hex digits, the `origin` `write_shard` takes."""
    digest = hashlib.sha256()
    for column in (items.ids, items.paths if items.paths is not None else ()):
        digest.update("\0".join(str(value) for value in column).encode())
        digest.update(b"\1")
    if items.images is not None:
        digest.update(hashlib.sha256(items.images.tobytes()).digest())
    described = [str(Path(getattr(run, "root", run)).resolve()) for run in runs]
    digest.update(json.dumps([described, sorted((k, repr(v)) for k, v in options.items())]).encode())
    return digest.hexdigest()[:12]


def torchrun_shard(requested: Shard | None, device: str) -> tuple[Shard | None, str]:
    """Under torchrun each process predicts the shard of its rank, on its own GPU when there are
    GPUs; without torchrun, `requested` and `device` as they are."""
    processes = started()
    if not processes.active:
        return requested, device
    if requested is not None:
        raise HierclfError(f"{option('shard')}: under torchrun each process predicts the shard of its rank; leave {option('shard')} out")
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        device = str(processes.device(resolved))
    return Shard(processes.rank, processes.world), device


def write_shard(out: Path, shard: Shard, predictions: Predictions, origin: str, with_probs: bool = False,
                label_index: bool = False) -> bool:
    """Write one shard's predictions into its part file; once every part of the same origin
    exists, join them into `out` in input order and delete the parts.

    Args:
        out: the CSV every shard's rows end in.
        shard: which shard `predictions` are (of `shard.rows(items)`).
        predictions: that shard's predictions.
        origin: `shard_origin` of the whole input, the runs and the options: parts of another
            origin (an earlier attempt) are removed, never joined.
        with_probs, label_index: as `write_predictions`.

    Returns:
        Whether this call joined the parts into `out`."""
    origin = f"{origin}{int(with_probs)}{int(label_index)}"  # the columns a part holds
    _remove_stale(out, origin)
    write_predictions(shard.part(out, origin), predictions, with_probs=with_probs, label_index=label_index)
    return merge_shards(out, shard.count, origin)


def _remove_stale(out: Path, origin: str) -> None:
    """Delete the parts beside `out` that an attempt of another origin (input, runs or options) left."""
    for part in sorted(out.parent.glob(f"{out.name}.part-*")):
        if not part.name.endswith(f".{origin}"):
            log.warning("removed %s: a part of an earlier prediction from another input, runs or options", part)
            part.unlink(missing_ok=True)


def merge_shards(out: Path, count: int, origin: str) -> bool:
    """Once every shard's part of `origin` exists, join them into `out` in input order (shard i
    holds rows i, i + n, i + 2n, …) and delete the parts; True when this call joined them. Shards
    that finish together race here: one holds the join (a lock beside `out`), the others leave it."""
    parts = [Shard(index, count).part(out, origin) for index in range(count)]
    if not all(part.exists() for part in parts):
        return False
    try:
        with holding(out.parent, f"joining the shards of {out}", lock=f".{out.name}.joining"):
            if not all(part.exists() for part in parts):
                return False  # another shard has joined them meanwhile
            lines = [part.read_text(encoding="utf-8").splitlines(keepends=True) for part in parts]
            header, bodies = lines[0][0], [part_lines[1:] for part_lines in lines]
            total = sum(len(body) for body in bodies)
            if any(part_lines[0] != header for part_lines in lines) or any(
                    len(body) != len(range(index, total, count)) for index, body in enumerate(bodies)):
                raise HierclfError(f"the parts of {out} do not fit together (other columns or row counts); "
                                   f"delete {out.name}.part-* and predict every shard again")
            write_text(out, "".join([header] + [bodies[row % count][row // count] for row in range(total)]))
            for part in parts:
                part.unlink(missing_ok=True)
    except InUseError:
        return False  # another shard is joining them now
    return True
