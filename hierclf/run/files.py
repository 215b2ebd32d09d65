"""Files of a run, written atomically and read back with checks: JSON, NumPy archives without
object arrays, safetensors weights. A killed process never leaves a half-written file, and
nothing read here is ever unpickled."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hierclf.errors import InUseError, RunError


TEMPORARY = re.compile(r"^\..+\.([0-9a-f]{8})-(\d+)\.[0-9a-f]{8}\.tmp$")
"""The name `atomic_path` gives a file while it is written: .<name>.<host>-<pid>.<random>.tmp,
<host> a short hash of the machine's name (run folders may be shared between machines)."""

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]

STALE_ELSEWHERE = 24 * 3600
"""Seconds after which another machine's temporary file counts as left by a killed writer."""

LOCK = ".lock"
"""The file that holds a folder for one writer: {"pid", "host", "what", "since"}."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it only when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # honours the umask
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def is_temporary(path: Path) -> bool:
    """A file `atomic_path` was writing: never part of what a folder holds."""
    return TEMPORARY.match(path.name) is not None


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
        if (mine and not _running(int(match.group(2)))) or (not mine and _age(path) > STALE_ELSEWHERE):
            path.unlink(missing_ok=True)
            swept.append(path)
    host = socket.gethostname()
    for path in root.rglob(LOCK) if root.is_dir() else ():
        holder = _lock_holder(path)
        if holder.get("host") == host and not _running(int(holder.get("pid", -1))):
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
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / lock
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    while True:
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            killed = holder.get("host") == mine["host"] and not _running(int(holder.get("pid", -1)))
            unwritten = not holder and _age(path) > 10  # its writer died between creating and filling it
            silent = holder.get("host") != mine["host"] and _quiet_for(folder) > _stale_after()
            if killed or unwritten or silent:
                path.unlink(missing_ok=True)  # take it over
                continue
            raise InUseError(f"{folder} is in use: {holder.get('what', 'another command')} (pid {holder.get('pid')} "
                           f"on {holder.get('host')}, since {holder.get('since')}); wait for it to finish, or "
                           f"delete {path} if that process is gone") from None
        with os.fdopen(handle, "w") as opened:
            json.dump(mine, opened)
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
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def check_writable(path: Path, option: str, folder: bool = False) -> None:
    """Refuse, before any work, an output `path` (a file, or with `folder` a folder) that cannot
    be written: a folder where a file is wanted or the reverse, a path under a file, or a place
    the user may not write (tried by creating and deleting a file there, which also catches what
    permission bits do not: a read-only or immutable mount, root's immutable folders)."""
    where = f"{option} {path}"
    if path.exists() and path.is_dir() != folder:
        wanted, found = ("folder", "file") if folder else ("file", "folder")
        raise RunError(f"{where}: that is a {found}; give a {wanted} path")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"{where}: {existing} is a file, so nothing can be written under it")
    probe = existing / f".hierclf-probe.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as error:
        raise RunError(f"{where}: cannot write in {existing} ({error.strerror})") from None


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path} cannot be read: {error}") from None


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    for name, array in arrays.items():
        if np.asarray(array).dtype == object:
            raise TypeError(f"{name}: object arrays would need pickle; use fixed-width strings")
    with atomic_path(path) as temporary:
        with temporary.open("wb") as handle:
            np.savez(handle, **arrays)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path} cannot be read: {error}") from None


def save_weights(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state_dict.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, refused when any holds NaN or infinity (a model that would
    predict NaN for every image)."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (OSError, SafetensorError) as error:
        raise RunError(f"{path} cannot be read: {error}") from None
    check_finite(tensors, str(path))
    return tensors


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RunError(f"{source}: tensor {name!r} holds NaN or infinite values, so these weights cannot "
                           f"predict; train them again or use others")
