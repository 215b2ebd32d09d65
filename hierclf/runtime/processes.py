"""Training one fold with several processes started by torchrun (DistributedDataParallel).

Every process runs the same command. Rank 0 alone reads the run folder's state, holds its
locks and writes its files; the others learn its decisions and errors through `from_main`, so
all of them stop together with the same message. Batches are split, never multiplied: the
recipe's `batch_size` is the global batch, shared among the processes, so a recipe trains the
same way on one process or on N. Small messages go as JSON text and arrays as tensors; nothing
sent between processes is pickled.

The process group is one object, `Processes`, joined once per command (`join`); with one
process every method does the plain thing (computes, returns, wraps nothing), so the code
above it does not branch on how many there are. `Placement` adds the device a stage trains on.
"""
from __future__ import annotations

import atexit
import contextlib
import json
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, ContextManager, Iterator, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from hierclf import errors
from hierclf.errors import HierclfError
from hierclf.runtime.launch import launched
from hierclf.seeding import derive_seed

T = TypeVar("T")

TIMEOUT = timedelta(hours=1)
"""How long a process waits for the others at one meeting point: rank 0 checks every image
while the others wait for its verdict, which on a large dataset takes minutes."""


@dataclass(frozen=True)
class Processes:
    """The processes that train one fold together: this one's rank among `world`, and its rank
    on its own machine (which GPU it drives). One process is `Processes()`."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's device: with several processes on CUDA, its own GPU."""
        if not self.active:
            return device
        if device.type == "mps":
            raise HierclfError("several processes (torchrun) cannot share Apple's MPS device; use one process")
        if device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def sharing(self, batch_size: int) -> str:
        """How a global batch is shared, for the log: nothing to say for one process."""
        if not self.active:
            return ""
        return f", {self.world} processes, each {batch_size // self.world} images of every batch"

    def seed(self, seed: int) -> int:
        """A seed for what each process must draw differently (augmentation, mixup, dropout):
        rank 0 keeps `seed`, so one process draws as it always did."""
        return seed if self.is_main else derive_seed(seed, self.rank)

    def from_main(self, compute: Callable[[], T]) -> T:
        """`compute()` on rank 0, its JSON-able result handed to every process. An error raised
        there is raised on every process, marked `mirrored` on the others (rank 0 reports it)."""
        if not self.active:
            return compute()
        if self.is_main:
            try:
                value = compute()
            except Exception as error:
                _broadcast_text(json.dumps({"error": type(error).__name__, "message": errors.user_message(error)}))
                raise
            _broadcast_text(json.dumps({"value": value}))
            return value
        message = json.loads(_broadcast_text(None))
        if "error" in message:
            raise _mirrored(message["error"], message["message"])
        return message["value"]

    def main_first(self, main: Callable[[], T], others: Callable[[], T]) -> T:
        """`main()` on rank 0 (the checks, and whatever is written); once it has succeeded,
        `others()` on every other process (reading what rank 0 wrote)."""
        if not self.active:
            return main()
        result: list[T] = []
        self.from_main(lambda: result.append(main()))
        return result[0] if self.is_main else others()

    @contextmanager
    def held_by_main(self, hold: Callable[[], ContextManager[Any]]) -> Iterator[None]:
        """The block runs on every process while rank 0 holds `hold()` (a fold's lock): every
        process raises the error that entering it raised on rank 0."""
        with ExitStack() as stack:
            def enter() -> None:
                stack.enter_context(hold())
            self.from_main(enter)
            yield

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the processes."""
        if not self.active:
            return [float(value) for value in values]
        tensor = torch.tensor([float(value) for value in values], dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def gather_rows(self, probs: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each process's outputs for its share of a loader's rows, joined on every process in
        row order: what one process would have computed alone."""
        if not self.active:
            return probs, rows
        sizes = torch.tensor([len(rows), probs.shape[1] if len(rows) else 0], dtype=torch.int64)
        every = [torch.zeros_like(sizes) for _ in range(self.world)]
        dist.all_gather(every, sizes)
        longest = max(int(size[0]) for size in every)
        width = max(int(size[1]) for size in every)
        padded_probs = torch.zeros((longest, width), dtype=torch.float32)
        padded_probs[:len(rows)] = torch.from_numpy(np.asarray(probs, dtype=np.float32).reshape(len(rows), width))
        padded_rows = torch.full((longest,), -1, dtype=torch.int64)
        padded_rows[:len(rows)] = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        all_probs = [torch.empty_like(padded_probs) for _ in range(self.world)]
        all_rows = [torch.empty_like(padded_rows) for _ in range(self.world)]
        dist.all_gather(all_probs, padded_probs)
        dist.all_gather(all_rows, padded_rows)
        joined_rows = torch.cat([part[:int(size[0])] for part, size in zip(all_rows, every)]).numpy()
        joined_probs = torch.cat([part[:int(size[0])] for part, size in zip(all_probs, every)]).numpy()
        order = np.argsort(joined_rows, kind="stable")
        return joined_probs[order], joined_rows[order]

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """What trains: the model in DistributedDataParallel, its gradients averaged over the
        processes after each backward; with one process the model itself. DDP averages the
        parameters that train when it is built, so a model whose backbone is frozen or thawed is
        wrapped again; building it copies rank 0's weights to all."""
        if not self.active:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def syncing(self, trained: torch.nn.Module, stepping: bool) -> ContextManager[Any]:
        """Inside it, a backward pass of `trained` exchanges gradients only on the batch that ends
        an optimiser step (`stepping`); with one process there is nothing to exchange."""
        if self.active and not stepping:
            return trained.no_sync()
        return contextlib.nullcontext()

    def sync_batchnorm(self, model: torch.nn.Module) -> None:
        """Batch norm converted in place to torch's SyncBatchNorm, whose statistics cover the
        global batch; the weights keep their names. Nothing to do for one process."""
        if self.active:
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


@dataclass(frozen=True)
class Placement:
    """Where a stage trains: this process's device, and the processes it shares every batch with
    (one, without torchrun)."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    processes: Processes = Processes()

    def seed(self, seed: int) -> int:
        """The seed of this process's own draws (see `Processes.seed`)."""
        return self.processes.seed(seed)


def join() -> Processes:
    """The processes torchrun started, their process group joined on first use: gloo for tensors
    on the CPU, NCCL for tensors on CUDA. Without torchrun, one process."""
    launch = launched()
    if not launch.by_torchrun:
        return Processes()
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(launch.local_rank)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
                                timeout=TIMEOUT)
        atexit.register(_leave)
    return Processes(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=launch.local_rank)


def started() -> Processes:
    """The processes torchrun started, as its environment says, without joining them: enough for
    work that exchanges nothing, as predicting a shard each. Without torchrun, one process."""
    launch = launched()
    return Processes(rank=launch.rank, world=launch.world, local_rank=launch.local_rank)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def _broadcast_text(text: str | None) -> str:
    """Rank 0's `text` on every process (the others pass None)."""
    data = torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8) if text is not None else None
    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
    dist.broadcast(size, src=0)
    if data is None:
        data = torch.empty(int(size[0]), dtype=torch.uint8)
    dist.broadcast(data, src=0)
    return bytes(data.numpy()).decode()


def _mirrored(kind: str, message: str) -> Exception:
    """The error rank 0 raised, rebuilt on another process: the same hierclf error class, or a
    RuntimeError for anything else; `mirrored` says rank 0 has already reported it."""
    cls = getattr(errors, kind, None)
    error = cls(message) if isinstance(cls, type) and issubclass(cls, HierclfError) \
        else RuntimeError(f"rank 0 failed: {kind}: {message}")
    error.mirrored = True
    return error
