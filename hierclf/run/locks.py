"""One writer per folder, and what killed writers leave behind.

A fold is held by a lock file while it trains (`holding`), so a second command training the same
fold, on this machine or another sharing the run folder, stops at once naming the holder; a
killed holder's lock is taken over. `sweep_temporary` deletes the files killed processes were
writing and the locks they held."""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hierclf.errors import InUseError, unwritable
from hierclf.readback import ReadBack, parse_json
from hierclf.run.files import HOST, TEMPORARY

STALE_ELSEWHERE = 24 * 3600
"""Seconds after which another machine's temporary file counts as left by a killed writer."""

LOCK = ".lock"
"""The file that holds a folder for one writer: {"pid", "host", "what", "since"}."""


def sweep_temporary(root: Path) -> list[Path]:
    """Delete what processes killed under `root` left behind: files they were writing, and the
    locks they held on this machine; a live process's are kept (another machine's temporary
    files only go after a day, as its processes cannot be seen from here). Returns what was deleted."""
    swept = []
    for path in root.rglob(".*.tmp") if root.is_dir() else ():
        match = TEMPORARY.match(path.name)
        if not match or not path.is_file():
            continue
        mine = match.group(1) == HOST
        if (mine and not process_running(int(match.group(2)))) or (not mine and _age(path) > STALE_ELSEWHERE):
            path.unlink(missing_ok=True)
            swept.append(path)
    host = socket.gethostname()
    for path in root.rglob(LOCK) if root.is_dir() else ():
        holder = _lock_holder(path)
        if holder.get("host") == host and not process_running(int(holder.get("pid", -1))):
            path.unlink(missing_ok=True)
            swept.append(path)
    return swept


@contextmanager
def holding(folder: Path, what: str, lock: str = LOCK) -> Iterator[None]:
    """Hold `folder` for this process while the block runs, so a second writer (another command
    on the same run, on this machine or another sharing the folder) stops at once, naming the
    holder, instead of training the same thing twice into the same files. A lock whose holder
    was on this machine and no longer runs (killed) is taken over, and so is another machine's
    once nothing in the folder has been written for `_stale_after()` seconds. Another `lock`
    name holds one thing in the folder, not all of it."""
    path = folder / lock
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            killed = holder.get("host") == mine["host"] and not process_running(int(holder.get("pid", -1)))
            unwritten = not holder and _age(path) > 10  # its writer died between creating and filling it
            silent = holder.get("host") != mine["host"] and _quiet_for(folder) > _stale_after()
            if killed or unwritten or silent:
                path.unlink(missing_ok=True)  # take it over
                continue
            raise InUseError(f"{folder} is in use: {holder.get('what', 'another command')} (pid {holder.get('pid')} "
                           f"on {holder.get('host')}, since {holder.get('since')}); wait for it to finish, or "
                           f"delete {path} if that process is gone") from None
        except OSError as error:
            raise unwritable(path, error) from None
        try:
            with os.fdopen(handle, "w") as opened:
                json.dump(mine, opened)
        except OSError as error:
            path.unlink(missing_ok=True)
            raise unwritable(path, error) from None
        break
    try:
        yield
    finally:
        if _lock_holder(path).get("pid") == mine["pid"]:
            path.unlink(missing_ok=True)


def _stale_after() -> float:
    """Seconds without a write in a held folder after which another machine's holder counts as
    dead: HIERCLF_STALE_LOCK_SECONDS, else 6 hours (longer than an epoch should ever take, as a
    training fold writes its metrics.jsonl every epoch)."""
    return float(os.environ.get("HIERCLF_STALE_LOCK_SECONDS", 6 * 3600))


def _quiet_for(folder: Path) -> float:
    """Seconds since anything in `folder` was last written: the holder's heartbeat."""
    try:
        newest = max(entry.stat().st_mtime for entry in folder.iterdir())
    except (OSError, ValueError):
        return 0.0
    return time.time() - newest


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _lock_holder(path: Path) -> dict[str, Any]:
    """The lock's holder; {} while its writer has not filled it yet (or the file is gone). A lock
    hierclf did not write (a pid that is no number, a host that is no text) is refused, naming it."""
    try:
        holder = parse_json(path.read_text())
    except (OSError, ValueError):
        return {}
    check = ReadBack(str(path), "delete it if no hierclf command is using this folder")
    check.table(holder, "the lock")
    if holder:
        check.number(check.field(holder, "pid", "lock"), "lock.pid", whole=True, lo=1)
        check.text(check.field(holder, "host", "lock"), "lock.host")
    return holder


def process_running(pid: int) -> bool:
    """Whether a process of this machine with that pid runs (a killed writer's does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


