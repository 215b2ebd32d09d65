"""An output is never what the command reads, nor a file of a run folder: every command refuses
it before any work, exit 2, and the file it named is left as it was."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from hierclf.errors import RunError
from hierclf.run.destinations import check_output, enclosing_run, predict_inputs
from conftest import cli, write_recipe


def _digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256("".join(sorted(str(p.relative_to(path)) + _digest(p) for p in path.rglob("*")
                                             if p.is_file())).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_command_refuses_an_output_it_reads_or_one_inside_a_run(flat_run, tmp_path):
    run, recipe, train_csv, _ = flat_run
    images = train_csv.with_suffix("")
    an_image = next(images.iterdir())
    weights = run / "coarse" / "fold-0" / "weights.safetensors"
    cases = [
        (("predict", run, train_csv, "--out", train_csv), "that is .*train.csv, which this command reads"),
        (("predict", run, train_csv, "--out", run / "recipe.toml"), "inside the run folder"),
        (("predict", run, train_csv, "--out", run / "coarse" / "fold-0" / "result.json"), "inside the run folder"),
        (("predict", run, images, "--out", an_image), "an image inside .*whose images this command reads"),
        (("predict", run, train_csv, "--out", an_image), "an image inside .*whose images this command reads"),
        (("fit-coarse", recipe, "--out", images / "run"), "a folder inside .*whose images this command reads"),
        (("fit-coarse", recipe, "--out", train_csv.parent), "that folder holds .*train.csv"),
        (("fit-coarse", recipe, "--out", run / "coarse" / "again"), "inside the run folder"),
        (("augment", recipe, "--out", train_csv.parent, "--copies", 1), "that folder holds .*train.csv"),
        (("augment", recipe, "--out", run, "--copies", 1), "that is a run folder"),
        (("import-weights", weights, "--model", "test_resnet", "--out", weights), "which this command reads"),
        (("dataset", "digits", run / "digits"), "inside the run folder"),
    ]
    before = {path: _digest(path) for path in (run, train_csv.parent)}
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert re.search(message, result.stderr), (args, result.stderr)
        assert "Traceback" not in result.output
    assert {path: _digest(path) for path in before} == before


def test_an_output_beside_what_is_read_is_written(flat_run, tmp_path):
    """Predictions written into the folder that holds the input CSV and its images (the default
    image folder when there is no folder named like the CSV) are fine: only images are read there."""
    run, _, train_csv, _ = flat_run
    inputs = predict_inputs([run], train_csv, None)
    check_output(train_csv.parent / "predictions.csv", "--out", reads=inputs)
    check_output(tmp_path / "new" / "p.csv", "--out", reads=inputs)
    check_output(run, "--out", reads=[], folder=True, run=True)  # a run resumed into its own folder


def test_a_run_folder_is_found_from_any_depth(flat_run, tmp_path):
    run = flat_run[0]
    assert enclosing_run(run / "coarse" / "fold-0" / "x.csv") == run.resolve()
    assert enclosing_run(run) is None
    assert enclosing_run(tmp_path / "x.csv") is None


def test_a_folder_output_inside_a_class_tree_it_reads_is_refused(tmp_path):
    from conftest import write_tree_dataset

    tree = write_tree_dataset(tmp_path / "tree")
    recipe = write_recipe(tmp_path / "recipe.toml", {"folder": str(tree)})
    result = cli("fit-coarse", recipe, "--out", tree / "run")
    assert result.exit_code == 2 and "a folder inside" in result.stderr, result.output
    assert not (tree / "run").exists()
    with pytest.raises(RunError, match="that folder holds"):
        check_output(tmp_path, "--out", reads=[tree], folder=True)


def test_an_output_that_is_a_fifo_socket_or_device_is_refused_and_left_as_it_is(flat_run, tmp_path):
    """A rename onto such a node replaces the node: as root, `--out /dev/null` would leave the
    machine a regular file there. Every command refuses it before any work."""
    import os
    import socket
    import stat

    run, recipe, train_csv, _ = flat_run
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    device = tmp_path / "null"
    device.symlink_to(os.devnull)
    unix = tmp_path / "s"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(unix))
    weights = run / "coarse" / "fold-0" / "weights.safetensors"
    commands = [("predict", run, train_csv, "--out"), ("export", run, "--out"),
                ("import-weights", weights, "--model", "test_resnet", "--out"),
                ("augment", recipe, "--copies", 1, "--out"), ("dataset", "digits")]
    try:
        for node, kind in ((fifo, "a FIFO"), (device, "a character device"), (unix, "a socket")):
            for command in commands:
                result = cli(*command, node)
                assert result.exit_code == 2, (command, node, result.output)
                assert f"that is {kind}, not a regular file" in result.stderr, (command, result.stderr)
                assert "Traceback" not in result.output
        assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_ISCHR(os.stat(device).st_mode)
        assert stat.S_ISSOCK(os.stat(unix).st_mode)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null", "s"]  # no temporary left
    finally:
        server.close()


def test_the_atomic_writer_itself_refuses_a_node(tmp_path):
    import os

    from hierclf.run.files import write_text

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RunError, match="that is a FIFO"):
        write_text(fifo, "x")
    assert os.path.exists(fifo) and not fifo.is_file()
