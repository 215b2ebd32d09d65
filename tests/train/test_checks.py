"""The checks fit-coarse and fit-fine run before anything is written."""
from types import SimpleNamespace

import pytest

from hierclf.errors import RecipeError
from hierclf.recipe.schema import StageConfig
from hierclf.runtime.processes import Processes
from hierclf.train.checks import check_processes


def test_a_global_batch_the_processes_cannot_share_and_sync_batchnorm_on_cpu_are_refused():
    def stage(**keys):  # what the check reads of a stage
        return SimpleNamespace(config=StageConfig(device="cpu", **keys), key="coarse")

    two = Processes(rank=0, world=2)
    check_processes(stage(batch_size=8), two)
    check_processes(stage(batch_size=7), Processes())  # one process shares nothing
    with pytest.raises(RecipeError, match=r"coarse.batch_size = 7 is the batch of all 2 processes together; make "
                                          r"it a multiple of 2"):
        check_processes(stage(batch_size=7), two)
    with pytest.raises(RecipeError, match="coarse.sync_batchnorm: torch's SyncBatchNorm runs on CUDA only"):
        check_processes(stage(batch_size=8, sync_batchnorm=True), two)
