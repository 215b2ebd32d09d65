"""Prediction in shards: each of N workers (anywhere, or the processes torchrun started) predicts
every N-th image into a part file, and the one that finds every part written joins them into the
output in input order. A library user shards the same way:

    shard = Shard(0, 4)
    write_shard(out, shard, predict_runs(runs, shard.rows(items)))
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hierclf.data import Items
from hierclf.errors import HierclfError, InUseError
from hierclf.predict.output import Predictions, write_predictions
from hierclf.run.files import write_text
from hierclf.run.locks import holding
from hierclf.runtime.devices import resolve_device
from hierclf.runtime.processes import started


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
        if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
            raise HierclfError(f"--shard {text!r}: expected I/N with 0 <= I < N, as 0/4")
        return cls(int(index), int(count))

    def rows(self, items: Items) -> Items:
        """This shard's rows of `items`."""
        return items.subset(list(range(self.index, len(items), self.count)))

    def part(self, out: Path) -> Path:
        """Where this shard writes its rows: OUT.part-<index>-of-<count>."""
        return out.with_name(f"{out.name}.part-{self.index}-of-{self.count}")


def torchrun_shard(requested: Shard | None, device: str) -> tuple[Shard | None, str]:
    """Under torchrun each process predicts the shard of its rank, on its own GPU when there are
    GPUs; without torchrun, `requested` and `device` as they are."""
    processes = started()
    if not processes.active:
        return requested, device
    if requested is not None:
        raise HierclfError("--shard: under torchrun each process predicts the shard of its rank; leave --shard out")
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        device = str(processes.device(resolved))
    return Shard(processes.rank, processes.world), device


def write_shard(out: Path, shard: Shard, predictions: Predictions, with_probs: bool = False,
                label_index: bool = False) -> bool:
    """Write one shard's predictions into its part file; once every part exists, join them into
    `out` in input order and delete the parts.

    Args:
        out: the CSV every shard's rows end in.
        shard: which shard `predictions` are (of `shard.rows(items)`).
        predictions: that shard's predictions.
        with_probs, label_index: as `write_predictions`.

    Returns:
        Whether this call joined the parts into `out`."""
    write_predictions(shard.part(out), predictions, with_probs=with_probs, label_index=label_index)
    return merge_shards(out, shard.count)


def merge_shards(out: Path, count: int) -> bool:
    """Once every shard's part exists, join them into `out` in input order (shard i holds rows
    i, i + n, i + 2n, …) and delete the parts; True when this call joined them. Shards that
    finish together race here: one holds the join (a lock beside `out`), the others leave it."""
    parts = [Shard(index, count).part(out) for index in range(count)]
    if not all(part.exists() for part in parts):
        return False
    try:
        with holding(out.parent, f"joining the shards of {out}", lock=f".{out.name}.joining"):
            if not all(part.exists() for part in parts):
                return False  # another shard has joined them meanwhile
            lines = [part.read_text(encoding="utf-8").splitlines(keepends=True) for part in parts]
            header, bodies = lines[0][0], [part_lines[1:] for part_lines in lines]
            total = sum(len(body) for body in bodies)
            write_text(out, "".join([header] + [bodies[row % count][row // count] for row in range(total)]))
            for part in parts:
                part.unlink(missing_ok=True)
    except InUseError:
        return False  # another shard is joining them now
    return True
