"""Errors a user can cause and fix. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations

import errno
import importlib
from typing import Any, Callable


OPTION_MARK = "\x1e"


def option(name: str) -> str:
    """A parameter a message names, by its Python name: the library's messages show `name` (as
    its callers pass it), the command line's the option or argument that sets it (`--name`), so
    each user reads the words they typed (`HierclfError.spelt`)."""
    return f"{OPTION_MARK}{name}{OPTION_MARK}"


class HierclfError(Exception):
    """Base of every user-fixable error: bad recipe, bad data, a run folder that does not fit."""

    def __str__(self) -> str:
        return self.spelt(lambda name: name)

    def spelt(self, spelling: Callable[[str], str]) -> str:
        """The message with each parameter it names (`option`) spelt by `spelling`."""
        parts = super().__str__().split(OPTION_MARK)
        return "".join(spelling(part) if index % 2 else part for index, part in enumerate(parts))


class RecipeError(HierclfError):
    """A recipe key is unknown, of the wrong type, or out of range."""


class DataError(HierclfError):
    """An image, CSV or label the data source cannot use."""


class RunError(HierclfError):
    """A run folder that is missing, incomplete, or made for another recipe or hierarchy."""


class InUseError(RunError):
    """A fold another process is training (its lock is held)."""


class TrainingError(HierclfError):
    """Training that cannot go on as the recipe sets it (a loss that became NaN or infinite)."""


class OverBudget(TrainingError):
    """A fit stopped because its epochs took longer than it was allowed (`tune-fine --budget`);
    its resume file holds the last epoch it finished."""

    def __init__(self, message: str, epochs: int):
        super().__init__(message)
        self.epochs = epochs


def unwritable(path: Any, error: BaseException) -> RunError:
    """The one line for a write the system refused: what, where, why, and that rerunning resumes."""
    reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
    if f"os error {errno.ENOSPC}" in str(error) or getattr(error, "errno", None) == errno.ENOSPC:
        reason = "no space left on the device"
    return RunError(f"cannot write {path}: {reason}; free space there (or fix the folder) and run the command "
                    f"again: what was finished is kept")


def user_message(error: BaseException, spelling: Callable[[str], str] | None = None) -> str:
    """The one line to show for `error`, the parameters it names spelt by `spelling` (the command
    line's options; default: their names).

    A DataLoader worker re-raises our error with the worker's whole traceback folded into the
    message; the user only needs the last line of it, which is our original message.
    """
    text = error.spelt(spelling) if spelling is not None and isinstance(error, HierclfError) else str(error)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        text = last[len(prefix):] if last.startswith(prefix) else last
    return text


def importable(name: str, command: str, install: str) -> Any:
    """The module `name`, or one line: that it is missing (and how to install it), or that it is
    installed but fails to import (an ABI mismatch, a broken install, no memory), with the error."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            raise HierclfError(f"{command} needs {name}, which is not installed: {install}") from None
        failure = error
    except Exception as error:  # a shared library that will not load, a version clash, MemoryError…
        failure = error
    first = str(failure).strip().splitlines()[0][:200] if str(failure).strip() else ""
    raise HierclfError(f"{command} needs {name}, which is installed but fails to import ({type(failure).__name__}: "
                       f"{first}); reinstall it ({install.replace('pip install', 'pip install --force-reinstall')}) "
                       f"or fix what it names") from None


OUT_OF_MEMORY = ("could not create a primitive", "can't allocate memory", "not enough memory", "out of memory",
                 "std::bad_alloc")
"""What torch, oneDNN and CUDA say when an allocation fails (oneDNN under an address-space limit
says it cannot create a primitive)."""


def out_of_memory(error: BaseException) -> bool:
    """Whether `error` says memory ran out (the command line then says so in one line)."""
    return isinstance(error, MemoryError) or any(text in str(error).lower() for text in OUT_OF_MEMORY)
