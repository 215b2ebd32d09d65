"""Files written atomically and read without unpickling."""
import os

import numpy as np
import pytest
import torch

from hierclf.errors import RunError
from hierclf.run.files import atomic_path, load_weights, read_json, read_npz, save_weights, write_json, write_npz


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text('{"version": 2, "half')
            raise RuntimeError("killed mid-write")
    assert read_json(target) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_npz_never_pickles(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        write_npz(tmp_path / "x.npz", ids=np.array(["a", None], dtype=object))
    np.savez(tmp_path / "evil.npz", payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RunError, match="evil.npz cannot be read"):
        read_npz(tmp_path / "evil.npz")
    write_npz(tmp_path / "ok.npz", ids=np.array(["a", "bb"]), probs=np.eye(2, dtype=np.float32))
    assert read_npz(tmp_path / "ok.npz")["ids"].tolist() == ["a", "bb"]


def test_files_take_the_umasks_mode_not_a_private_one(tmp_path):
    previous = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {})
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_missing_and_broken_files_are_run_errors(tmp_path):
    with pytest.raises(RunError, match="missing"):
        read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RunError, match="cannot be read"):
        read_json(tmp_path / "bad.json")
    save_weights(tmp_path / "w.safetensors", {"x": torch.ones(2)})
    assert torch.equal(load_weights(tmp_path / "w.safetensors")["x"], torch.ones(2))
    (tmp_path / "w.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunError, match="cannot be read"):
        load_weights(tmp_path / "w.safetensors")


def test_weights_holding_nan_are_refused_when_loaded(tmp_path):
    import torch

    from hierclf.errors import RunError
    from hierclf.run.files import load_weights, save_weights

    save_weights(tmp_path / "w.safetensors", {"fc.weight": torch.tensor([[1.0, float("nan")]]),
                                              "steps": torch.tensor([3])})
    with pytest.raises(RunError, match=r"w.safetensors: tensor 'fc.weight' holds NaN or infinite values"):
        load_weights(tmp_path / "w.safetensors")


def test_a_killed_writers_temporary_files_are_swept_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from hierclf.run.files import HOST, STALE_ELSEWHERE, is_temporary, sweep_temporary

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / "fold-0").mkdir()
    left = tmp_path / "fold-0" / f".weights.safetensors.{HOST}-{dead}.0123abcd.tmp"
    live = tmp_path / f".oof.npz.{HOST}-{os.getpid()}.89abcdef.tmp"
    elsewhere = tmp_path / f".oof.npz.0000beef-{dead}.89abcdef.tmp"  # another machine's: its pid means nothing here
    old_elsewhere = tmp_path / f".val.npz.0000beef-{dead}.89abcdef.tmp"
    other = tmp_path / ".notes.tmp"
    for path in (left, live, elsewhere, old_elsewhere, other):
        path.write_text("x")
    os.utime(old_elsewhere, (0, os.path.getmtime(old_elsewhere) - STALE_ELSEWHERE - 60))
    assert is_temporary(left) and is_temporary(live) and is_temporary(elsewhere) and not is_temporary(other)
    assert sorted(sweep_temporary(tmp_path)) == sorted([left, old_elsewhere])
    assert not left.exists() and live.exists() and elsewhere.exists() and other.exists()


def test_a_held_folder_stops_a_second_writer_and_a_killed_holders_lock_is_taken_over(tmp_path, monkeypatch):
    import json
    import socket
    import subprocess
    import sys

    from hierclf.run.files import LOCK, holding

    with holding(tmp_path / "fold-0", "training coarse fold 0"):
        holder = json.loads((tmp_path / "fold-0" / LOCK).read_text())
        assert holder["pid"] == os.getpid() and holder["what"] == "training coarse fold 0"
        with pytest.raises(RunError, match=rf"fold-0 is in use: training coarse fold 0 \(pid {os.getpid()} on "):
            with holding(tmp_path / "fold-0", "another"):
                pass
    assert not (tmp_path / "fold-0" / LOCK).exists()  # released
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    (tmp_path / "fold-0" / LOCK).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "what": "x"}))
    with holding(tmp_path / "fold-0", "mine"):  # the holder was killed: taken over
        assert json.loads((tmp_path / "fold-0" / LOCK).read_text())["what"] == "mine"
    (tmp_path / "fold-0" / LOCK).write_text(json.dumps({"pid": dead, "host": "elsewhere", "what": "x"}))
    with pytest.raises(RunError, match="pid .* on elsewhere"):  # another machine's, still writing: refused
        with holding(tmp_path / "fold-0", "mine"):
            pass
    for entry in (tmp_path / "fold-0").iterdir():  # …until its folder has been silent for the stale time
        os.utime(entry, (0, os.path.getmtime(entry) - 3600))
    monkeypatch.setenv("HIERCLF_STALE_LOCK_SECONDS", "600")
    with holding(tmp_path / "fold-0", "mine"):
        assert json.loads((tmp_path / "fold-0" / LOCK).read_text())["what"] == "mine"
