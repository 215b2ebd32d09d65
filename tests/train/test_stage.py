"""A stage across folds: finished folds kept, the out-of-fold file gathered and scored."""
import re

import numpy as np
import pytest

from conftest import cli, write_recipe
from hierclf.run.files import read_json, read_npz
from hierclf.run.folder import Run


def test_oof_covers_every_row_once_and_the_model_learns(flat_run):
    root, _, _, result = flat_run
    run = Run.open(root)
    oof = read_npz(run.oof_path("coarse"))
    assert sorted(oof["ids"]) == sorted(run.folds.ids) and len(set(oof["ids"])) == 60
    fold_of = dict(zip(run.folds.ids, run.folds.fold))
    assert all(fold_of[i] == f for i, f in zip(oof["ids"], oof["fold"]))
    assert np.allclose(oof["probs"].sum(1), 1, atol=1e-4) and oof["targets"].ndim == 1  # one block: a vector
    accuracy = (oof["probs"].argmax(1) == oof["targets"]).mean()
    assert accuracy >= 0.8, accuracy  # chance is 1/3
    summary = read_json(run.summary_path("coarse"))
    assert summary["oof_accuracy"] == pytest.approx(accuracy) and len(summary["folds"]) == 3
    assert "heads" not in summary
    assert 0.8 <= summary["train_macro_f1"] <= 1.0 and all("train_macro_f1" in fold for fold in summary["folds"])
    assert "coarse out-of-fold (60 rows, 3 folds)" in result.stdout and summary["diagnosis"] in result.stdout


def test_rerun_skips_finished_folds(flat_run):
    root, recipe, _, _ = flat_run
    weights = Run.open(root).fold_dir("coarse", 0) / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    # a fit killed between a fold's result.json and removing its resume file: the rerun tidies it
    stale = weights.parent.parent / "fold-1" / "resume.safetensors"
    stale.write_bytes(weights.read_bytes())
    result = cli("fit-coarse", recipe, "--out", root, "--set", "coarse.workers=1")  # runtime key: allowed
    assert result.exit_code == 0
    assert result.stderr.count("already trained; keeping it") == 3
    assert weights.stat().st_mtime_ns == before and not stale.exists()


def test_folds_one_at_a_time_then_the_summary(tmp_path, csv_dataset):
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)}, coarse={"epochs": 1})
    for fold in (2, 0):
        result = cli("fit-coarse", recipe, "--out", tmp_path / "run", "--fold", fold)
        assert result.exit_code == 0 and "run the other folds" in result.stdout
    run = Run.open(tmp_path / "run")
    assert run.finished_folds("coarse") == [0, 2] and not run.oof_path("coarse").exists()
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run", "--fold", 1)
    assert "coarse out-of-fold (60 rows, 3 folds)" in result.stdout and run.oof_path("coarse").is_file()


def test_a_heads_stage_is_scored_jointly_and_head_by_head(mask_runs):
    run = Run.open(mask_runs / "heads")
    summary = read_json(run.summary_path("coarse"))
    heads = summary["heads"]
    # chance: 0.33 (mask), 0.5 (gender), 0.33 (age) macro-F1; 1/18 for the joint class
    assert {name: head["size"] for name, head in heads.items()} == {"mask": 3, "gender": 2, "age": 3}
    assert all(head["oof_macro_f1"] > 0.8 for head in heads.values()), heads
    assert summary["oof_macro_f1"] > 0.6
    oof = read_npz(run.oof_path("coarse"))
    assert oof["targets"].shape == (len(oof["ids"]), 3) and oof["probs"].shape[1] == 8
    metrics = (run.fold_dir("coarse", 0) / "metrics.jsonl").read_text()
    assert '"val_age_macro_f1"' in metrics and '"val_mask_accuracy"' in metrics


def test_a_fold_another_command_is_training_stops_this_one_naming_it(tmp_path, csv_dataset):
    from hierclf.run.locks import holding

    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)}, coarse={"epochs": 1})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--fold", "2").exit_code == 0
    with holding(tmp_path / "run" / "coarse" / "fold-1", "training coarse fold 1 of run (the first command)"):
        result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert "fold-1 is in use: training coarse fold 1 of run (the first command) (pid" in result.stderr
    run = Run.open(tmp_path / "run")
    assert run.finished_folds("coarse") == [0, 2]  # it trained what no one held, and stopped at the held fold
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run").exit_code == 0  # released: the rest trains
    assert run.finished_folds("coarse") == [0, 1, 2]


KILL_AT_WRITE = """
import os, signal, sys
suffix, count, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real_replace, seen = os.replace, []

def replace(source, destination):
    hit = str(destination).endswith(suffix)
    seen.extend([destination] if hit else [])
    if hit and len(seen) == count and when == "before":  # the new file written beside it, not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(source, destination)
    if hit and len(seen) == count and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
sys.argv = ["hierclf", *sys.argv[4:]]
from hierclf.cli import main
main()
"""
"""Runs the CLI and SIGKILLs it at an exact write: the `count`-th file renamed onto a path ending
in `suffix`, just before or just after the rename (every run file is written beside its place
and renamed onto it)."""


def test_fit_coarse_killed_at_several_moments_resumes_to_the_same_out_of_fold_file(tmp_path):
    """SIGKILL a real fit-coarse at four exact moments: mid-write of fold 0's third resume file,
    mid-write of its result.json, after fold 1's first epoch, and between folds 1 and 2. Each rerun
    resumes where the last one stopped (the finished folds kept, an unfinished one from its last
    saved epoch), and the last ends with the out-of-fold file an uninterrupted run writes, no
    temporary file left, and every file readable."""
    import json
    import signal
    import subprocess
    import sys

    from conftest import write_csv_dataset
    from hierclf.run.files import load_weights

    train_csv = write_csv_dataset(tmp_path / "data", per_class=40)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"img_size": 32, "epochs": 4})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "whole").exit_code == 0
    run_dir = tmp_path / "cut"
    arguments = ["fit-coarse", str(recipe), "--out", str(run_dir)]
    moments = [("fold-0/resume.safetensors", 3, "before", "coarse fold 0: resuming"),  # the first run resumes none
               ("fold-0/result.json", 1, "before", "coarse fold 0: resuming after epoch 2 of 4"),
               ("fold-1/resume.safetensors", 1, "after", "coarse fold 0: resuming after epoch 3 of 4"),  # the last epoch is not saved: the fold ends after it
               ("fold-1/result.json", 1, "after", "coarse fold 1: resuming after epoch 1 of 4")]
    for index, (suffix, count, when, said) in enumerate(moments):
        killed = subprocess.run([sys.executable, "-W", "ignore", "-c", KILL_AT_WRITE, suffix, str(count), when,
                                 *arguments], capture_output=True, text=True)
        assert killed.returncode == -signal.SIGKILL, (suffix, killed.stderr)
        assert (said in killed.stderr) == (index > 0), (suffix, killed.stderr)
        assert bool(list(run_dir.rglob("*.tmp"))) == (when == "before")  # killed mid-write: its temporary left
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "hierclf", *arguments], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "coarse fold 2: 80 training rows" in done.stderr and "resuming" not in done.stderr
    assert "coarse fold 0: 80" not in done.stderr and "coarse fold 1: 80" not in done.stderr  # finished: kept
    whole, cut = Run.open(tmp_path / "whole"), Run.open(run_dir)
    expected, got = read_npz(whole.oof_path("coarse")), read_npz(cut.oof_path("coarse"))
    assert np.array_equal(expected["ids"], got["ids"])
    assert np.allclose(expected["probs"], got["probs"], atol=1e-5)
    assert not list(run_dir.rglob("*.tmp")) and not list(run_dir.rglob("resume.safetensors"))
    assert not list(run_dir.rglob(".lock"))
    for path in run_dir.rglob("*"):
        if path.suffix == ".json":
            read_json(path)
        elif path.suffix == ".npz":
            read_npz(path)
        elif path.suffix == ".safetensors":
            load_weights(path)
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
    for fold in range(3):  # every epoch logged once, resumed or not
        epochs = [json.loads(line)["epoch"] for line in
                  (run_dir / "coarse" / f"fold-{fold}" / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, 5)), (fold, epochs)


def test_workers_with_fold_next_share_the_folds_and_take_over_a_killed_ones(tmp_path):
    """Three workers on one run folder: the first is killed inside its fold; two more, started
    together with --fold next, train every fold exactly once between them (the killed one's
    resumed) and the out-of-fold file is written."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import write_csv_dataset

    train_csv = write_csv_dataset(tmp_path / "data", per_class=40)
    # one torch thread each: two workers of two threads on two cores slow each other tenfold
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)},
                          coarse={"img_size": 32, "epochs": 4, "threads": 1})
    run_dir = tmp_path / "run"
    command = [sys.executable, "-W", "ignore", "-m", "hierclf", "-q", "fit-coarse", str(recipe), "--out",
               str(run_dir), "--fold", "next"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "coarse" / "fold-0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while (not metrics.exists() or not metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGKILL)  # it dies holding fold 0
    first.wait()
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outputs
    run = Run.open(run_dir)
    assert run.finished_folds("coarse") == [0, 1, 2] and run.oof_path("coarse").exists()
    for fold in range(3):
        epochs = [json.loads(line)["epoch"] for line in
                  (run_dir / "coarse" / f"fold-{fold}" / "metrics.jsonl").read_text().splitlines()]
        assert epochs == [1, 2, 3, 4], (fold, epochs)  # trained once, by one worker
    assert not list(run_dir.rglob(".lock"))


def test_a_stage_trains_with_the_threads_its_recipe_gives(tmp_path, csv_dataset, monkeypatch):
    import torch

    import hierclf.train.stage as stage_module

    seen = []
    monkeypatch.setattr(stage_module, "train_fold", lambda *args: seen.append(torch.get_num_threads()))
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)}, coarse={"epochs": 1, "threads": 1})
    before = torch.get_num_threads()
    cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run")
    assert seen == [1, 1, 1] and torch.get_num_threads() == before  # each fold on one thread, then restored


def test_a_resume_file_of_another_fit_or_damaged_is_refused_in_one_line(tmp_path, monkeypatch):
    """A resume file copied from another run (other keys), one whose generator state or tensors
    do not fit, or whose history does not hold together: one line naming it, exit 2, nothing
    trained; deleted, the fold trains from the start."""
    import json
    import re
    import shutil

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from conftest import Killed, kill_after_saving, write_csv_dataset

    train_csv = write_csv_dataset(tmp_path / "data", per_class=20)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 4})
    kill_after_saving(monkeypatch, epoch=2)
    with pytest.raises(Killed):
        cli("-q", "fit-coarse", recipe, "--out", tmp_path / "cut")
    monkeypatch.undo()
    resume = tmp_path / "cut" / "coarse" / "fold-0" / "resume.safetensors"
    with safe_open(str(resume), framework="pt") as opened:
        metadata, tensors = opened.metadata(), {name: opened.get_tensor(name) for name in opened.keys()}

    def damaged(change_tensors=None, change_state=None, made_for=None):
        state = json.loads(metadata["state"])
        (change_state or (lambda s: None))(state)
        saved = {**tensors, **(change_tensors or {})}
        return {**metadata, "state": json.dumps(state), **({"made_for": made_for} if made_for is not None else {})}, saved

    head = next(name for name in tensors if name.startswith("model/") and name.endswith("fc.weight"))
    cases = [
        (damaged(made_for="0" * 16), "saved by another run, fold or training keys"),
        (damaged({"rng/torch": torch.randint(0, 255, (7,), dtype=torch.uint8)}), "does not fit this fold's model"),
        (damaged({head: torch.zeros(5, 3)}), "does not fit this fold's model"),
        (damaged(change_state=lambda s: s["history"].pop()), "its history does not hold one entry per epoch done"),
        (damaged(change_state=lambda s: s["history"][0].update(seconds="x")), "history\\[0\\].seconds is 'x'"),
    ]
    for (meta, saved), message in cases:
        save_file(saved, str(resume), metadata=meta)
        result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "cut", "--fold", "0")
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert re.search(f"resume.safetensors: .*{message}.*; delete it to train this fold from the start",
                         result.stderr), result.stderr
        assert not (resume.parent / "result.json").exists()
    # a resume file copied into a run trained with another rate
    other = write_recipe(tmp_path / "o.toml", {"csv": str(train_csv)}, coarse={"epochs": 4, "lr": 1e-3})
    save_file(tensors, str(resume), metadata=metadata)
    kill_after_saving(monkeypatch, epoch=1)
    with pytest.raises(Killed):
        cli("-q", "fit-coarse", other, "--out", tmp_path / "other")
    monkeypatch.undo()
    shutil.copy(resume, tmp_path / "other" / "coarse" / "fold-0" / "resume.safetensors")
    result = cli("-q", "fit-coarse", other, "--out", tmp_path / "other", "--fold", "0")
    assert result.exit_code == 2 and "saved by another run, fold or training keys" in result.stderr, result.output
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "cut", "--fold", "0")  # its own: resumes
    assert result.exit_code == 0 and (resume.parent / "result.json").exists(), result.output


def test_a_full_disk_mid_fit_ends_in_one_line_and_the_fit_resumes_once_space_is_freed(tmp_path, monkeypatch):
    """On a small tmpfs where this machine can mount one (9 MB: room for one resume file of the
    tiny model, not for its next one beside it; else with the write refused by an
    injected ENOSPC), fit-coarse stops at the first file it cannot write, naming it, exit 2; with
    space freed it resumes and ends with the out-of-fold file of an uninterrupted run."""
    import errno
    import os
    import subprocess

    from conftest import write_csv_dataset
    import hierclf.train.checkpoint as checkpoint

    train_csv = write_csv_dataset(tmp_path / "data", per_class=20)
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 4})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "whole").exit_code == 0
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=9m", "tmpfs", str(disk)],
                                                   capture_output=True).returncode == 0
    if not mounted:
        saving, calls = checkpoint.save_file, []

        def full_on_the_third(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return saving(*args, **kwargs)
        monkeypatch.setattr(checkpoint, "save_file", full_on_the_third)
    try:
        result = cli("-q", "fit-coarse", recipe, "--out", disk / "run")
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
        assert re.search(r"cannot write .*disk/run/coarse/fold-\d/.*: no space left on the device; free space",
                         result.stderr), result.stderr
        assert not list((disk / "run").rglob("*.tmp"))
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        monkeypatch.undo()
        result = cli("fit-coarse", recipe, "--out", disk / "run")
        assert result.exit_code == 0, result.output
        assert "resuming after epoch" in result.stderr or "already trained" in result.stderr
        expected = read_npz(tmp_path / "whole" / "coarse" / "oof.npz")
        got = read_npz(disk / "run" / "coarse" / "oof.npz")
        assert np.array_equal(expected["ids"], got["ids"]) and np.allclose(expected["probs"], got["probs"], atol=1e-5)
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=False)
