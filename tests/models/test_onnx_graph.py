"""The ONNX tracer's neighbours: int8 quantisation's temporary folders."""
import os
import subprocess
import tempfile

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
