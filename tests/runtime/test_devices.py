"""Where tensors live: auto picks what exists; a named device that does not exist is refused."""
import pytest
import torch

from hierclf.runtime.devices import resolve_device
from hierclf.errors import HierclfError


def test_auto_and_named_devices(monkeypatch):
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(HierclfError, match="no CUDA device is available"):
        resolve_device("cuda")
    with pytest.raises(HierclfError, match="MPS is not available"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda" and resolve_device("cuda").type == "cuda"


def test_processes_sharing_a_machine_take_their_share_of_the_cores(monkeypatch, caplog):
    import logging
    import os

    import torch

    from hierclf.runtime.devices import thread_count, torch_threads

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("HIERCLF_PROCESSES_PER_MACHINE", raising=False)
    assert thread_count(0) is None and thread_count(3) == 3  # alone: torch's default; a key wins
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's four processes on this machine
    assert thread_count(0) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert thread_count(0) == 1
    before = torch.get_num_threads()
    with caplog.at_level(logging.INFO, logger="hierclf"), torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before and "torch threads: 1 (of 16 cores)" in caplog.text
