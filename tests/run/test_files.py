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
        save_weights(tmp_path / "w.safetensors", {"w": torch.zeros(2)})  # safetensors makes its file anew
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644  # other workers of a shared run read it


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
