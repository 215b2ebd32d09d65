import numpy as np
import pytest

from hierclf.errors import RunError
from hierclf.hierarchy import GroupHierarchy
from hierclf.recipe import recipe_from_dict
from hierclf.runs import RunDir, atomic_path, read_npz, write_json, write_npz


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "summary.json"
    write_json(target, {"version": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text('{"version": 2, "half')
            raise RuntimeError("killed mid-write")
    assert target.read_text().startswith('{\n  "version": 1')
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_npz_never_pickles(tmp_path):
    with pytest.raises(TypeError, match="pickle"):
        write_npz(tmp_path / "x.npz", ids=np.array(["a", None], dtype=object))
    np.savez(tmp_path / "evil.npz", payload=np.array([{"a": 1}], dtype=object))
    with pytest.raises(RunError, match="evil.npz cannot be read"):
        read_npz(tmp_path / "evil.npz")
    write_npz(tmp_path / "ok.npz", ids=np.array(["a", "bb"]), probs=np.eye(2, dtype=np.float32))
    assert read_npz(tmp_path / "ok.npz")["ids"].tolist() == ["a", "bb"]


def test_a_run_folder_of_another_hierarchy_is_refused(tmp_path):
    recipe = recipe_from_dict({"data": {"csv": "/d/train.csv"}})
    run = RunDir(tmp_path / "run")
    run.prepare(recipe, GroupHierarchy(("a", "b", "c")))
    run.prepare(recipe, GroupHierarchy(("a", "b", "c")))  # same: fine
    with pytest.raises(RunError, match="made for another hierarchy"):
        run.prepare(recipe, GroupHierarchy(("a", "b", "x")))
    assert run.recipe() == recipe


def test_files_are_readable_by_others(tmp_path):
    write_json(tmp_path / "a.json", {})
    assert (tmp_path / "a.json").stat().st_mode & 0o044  # the umask's, not mkstemp's 0600
