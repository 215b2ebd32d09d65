"""Where tensors live: auto picks what exists; a named device that does not exist is refused."""
import pytest
import torch

from hierclf.devices import resolve_device
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
