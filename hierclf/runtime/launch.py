"""How this process was started: alone, or as one of the processes torchrun started. torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) is read here and nowhere else; this
module imports no torch, so the command line can ask before anything heavy loads."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Launch:
    """This process's rank among `world` processes, its rank on its own machine (which GPU it
    drives), and how many processes share its machine (`local_world`: torchrun's, or
    HIERCLF_PROCESSES_PER_MACHINE for workers started by other means, as a Slurm array)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def by_torchrun(self) -> bool:
        return self.world > 1


def launched() -> Launch:
    """This process as its environment describes it; one process alone without torchrun."""
    env = os.environ
    local_world = env.get("LOCAL_WORLD_SIZE") or env.get("HIERCLF_PROCESSES_PER_MACHINE") or 1
    return Launch(rank=int(env.get("RANK", 0) or 0), world=int(env.get("WORLD_SIZE", 1) or 1),
                  local_rank=int(env.get("LOCAL_RANK", 0) or 0), local_world=int(local_world))
