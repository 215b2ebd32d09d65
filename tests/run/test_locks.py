"""One writer per folder, and what killed writers leave behind."""
import os
import re

import pytest

from hierclf.errors import RunError


def test_a_killed_writers_temporary_files_are_swept_and_a_live_ones_kept(tmp_path):
    import subprocess
    import sys

    from hierclf.run.files import HOST, is_temporary
    from hierclf.run.locks import STALE_ELSEWHERE, sweep_temporary

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

    from hierclf.run.locks import LOCK, holding

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


@pytest.mark.parametrize("content, message", [
    ('{"pid": "abc", "host": "h"}', "lock.pid is 'abc', not a finite whole number"),
    ('{"pid": 12, "host": 7}', "lock.host is 7, not text"),
    ('{"pid": -4, "host": "h"}', "lock.pid is -4, expected >= 1"),
    ('{"host": "h"}', "lock.pid is missing"),
    ("[1, 2]", "the lock is [1, 2], not a table"),
])
def test_a_lock_with_garbage_fields_is_refused_in_one_line(tmp_path, content, message):
    from hierclf.run.locks import holding, sweep_temporary

    (tmp_path / ".lock").write_text(content)
    for attempt in (lambda: sweep_temporary(tmp_path), lambda: holding(tmp_path, "training").__enter__()):
        with pytest.raises(RunError, match=re.escape(f".lock: {message}; delete it if no hierclf command is using")):
            attempt()
    assert (tmp_path / ".lock").read_text() == content
