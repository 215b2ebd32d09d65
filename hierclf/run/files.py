"""Files of a run, written atomically and read back with checks: JSON, NumPy archives without
object arrays, safetensors weights; and an output path tried before any work. A killed process
never leaves a half-written file (what it was writing is swept, `hierclf.run.locks`), and
nothing read here is ever unpickled."""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import stat
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hierclf.data.bounded import checked_input
from hierclf.errors import DataError, RunError, unwritable
from hierclf.readback import parse_json


TEMPORARY = re.compile(r"^\..+\.([0-9a-f]{8})-(\d+)\.[0-9a-f]{8}\.tmp$")
"""The name `atomic_path` gives a file while it is written: .<name>.<host>-<pid>.<random>.tmp,
<host> a short hash of the machine's name (run folders may be shared between machines)."""

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]



def special_kind(path: Path) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a folder (a FIFO, a socket,
    a device node; a link followed): a rename onto it would replace the node itself, and run as
    root, `--out /dev/null` would leave the machine a regular file in its place."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    kinds = {stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device"}
    return next((name for test, name in kinds.items() if test(mode)), None)


def refuse_special(path: Path, where: str) -> None:
    kind = special_kind(path)
    if kind is not None:
        raise RunError(f"{where}: that is {kind}, not a regular file; give a new path or a regular file")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it only when the block succeeds. A write the
    system refuses (a full disk, a quota, a folder turned read-only) ends in one RunError naming
    the file; the file as it was stays, and so does everything finished before. A path that is a
    FIFO, socket or device is refused before anything is written."""
    refuse_special(path, str(path))
    temporary = path.parent / f".{path.name}.{HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask
        mode = os.fstat(handle).st_mode & 0o777
        os.close(handle)
        yield Path(temporary)
        os.chmod(temporary, mode)  # a writer that makes the file anew (safetensors) leaves it private
        os.replace(temporary, path)
    except (OSError, SafetensorError) as error:
        Path(temporary).unlink(missing_ok=True)
        raise unwritable(path, error) from None
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def is_temporary(path: Path) -> bool:
    """A file `atomic_path` was writing: never part of what a folder holds."""
    return TEMPORARY.match(path.name) is not None


def check_writable(path: Path, option: str, folder: bool = False) -> None:
    """Refuse, before any work, an output `path` (a file, or with `folder` a folder) that cannot
    be written: a folder where a file is wanted or the reverse, a path under a file, or a place
    the user may not write (tried by creating and deleting a file there, which also catches what
    permission bits do not: a read-only or immutable mount, root's immutable folders), and a path
    that is neither a regular file nor a folder (`special_kind`)."""
    where = f"{option} {path}"
    refuse_special(path, where)
    if path.exists() and path.is_dir() != folder:
        wanted, found = ("folder", "file") if folder else ("file", "folder")
        raise RunError(f"{where}: that is a {found}; give a {wanted} path")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"{where}: {existing} is a file, so nothing can be written under it")
    probe = existing / f".hierclf-probe.{HOST}-{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"  # a temporary, if left
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


def _checked(path: Path) -> Path:
    """A run's own file, refused when missing, no regular file, or larger than a run file may be."""
    if not path.exists():
        raise RunError(f"{path} is missing")
    try:
        return checked_input(path, "run file")
    except DataError as error:
        raise RunError(str(error)) from None


def read_json(path: Path) -> Any:
    try:
        return parse_json(_checked(path).read_text(encoding="utf-8"))
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
        with np.load(_checked(path), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # a file cut short is no zip at all
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


def save_png(path: Path, figure: Any) -> None:
    """A matplotlib figure as a PNG file, written atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
