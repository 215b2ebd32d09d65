"""The ONNX tracer's neighbours: int8 quantisation's temporary folders."""
import os
import subprocess
import tempfile

import pytest

from hierclf.models.onnx_graph import INT8_PREFIX, sweep_int8_folders
from hierclf.run.files import HOST


def test_a_killed_int8_quantisation_leaves_nothing_behind_for_long(tmp_path, monkeypatch):
    """kill -9 runs no clean-up: the next quantisation deletes the folders of this machine's
    processes that no longer run, and keeps a live one's (and another machine's)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = tmp_path / f"{INT8_PREFIX}{HOST}-{ended.pid}-abcd"
    live = tmp_path / f"{INT8_PREFIX}{HOST}-{os.getpid()}-efgh"
    elsewhere = tmp_path / f"{INT8_PREFIX}0badc0de-{ended.pid}-ijkl"
    for folder in (dead, live, elsewhere):
        (folder / "ort.quant.x").mkdir(parents=True)
        (folder / "plain.onnx").write_bytes(b"\0" * 1024)
    assert sweep_int8_folders() == [dead]
    assert not dead.exists() and live.is_dir() and elsewhere.is_dir()


def test_a_graph_the_torchscript_exporter_cannot_trace_is_traced_without_printing_it(capfd):
    """A zoom-out view's antialiased resize sends tracing to torch.export; torch's TorchScript
    exporter would first print the whole graph to file descriptor 1."""
    pytest.importorskip("onnxscript")
    import torch

    from hierclf.models.onnx_graph import traced

    class ZoomOut(torch.nn.Module):
        def forward(self, images):
            return torch.nn.functional.interpolate(images, size=(6, 6), mode="bilinear", antialias=True).mean((1, 2, 3))

    capfd.readouterr()
    proto = traced(ZoomOut(), torch.rand(2, 1, 8, 8), "images", ("probs",), {0: "batch"})
    assert proto.graph.node and capfd.readouterr().out == ""
