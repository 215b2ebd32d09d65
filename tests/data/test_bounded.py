"""An input that is no regular file (/dev/zero, a FIFO) or far larger than its kind is refused
naming it before a byte is read: the command ends at once, exit 2, instead of reading until the
machine runs out of memory."""
import os
import re
import shutil

import pytest

from conftest import cli, write_recipe
from hierclf.data import bounded
from hierclf.data.bounded import checked_input
from hierclf.errors import DataError


@pytest.fixture()
def fifo(tmp_path):
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


def test_devices_pipes_and_oversized_files_are_refused(tmp_path, fifo, monkeypatch):
    with pytest.raises(DataError, match="CSV /dev/zero is a device, pipe or socket, not a file"):
        checked_input("/dev/zero", "CSV")
    with pytest.raises(DataError, match="pipe.csv is a device, pipe or socket"):
        checked_input(fifo, "CSV")
    with pytest.raises(DataError, match="is a folder, not a file"):
        checked_input(tmp_path, "recipe")
    (tmp_path / "big.toml").write_bytes(b"#" * 3000)
    monkeypatch.setitem(bounded.LIMITS, "recipe", 2048)
    with pytest.raises(DataError, match="big.toml holds 0 MB, more than the 0 MB a recipe may"):
        checked_input(tmp_path / "big.toml", "recipe")


def test_every_command_refuses_an_endless_input_at_once(flat_run, tmp_path, fifo):
    run, recipe, train_csv, _ = flat_run
    images = train_csv.with_suffix("")
    shutil.copytree(images, tmp_path / "images")
    os.mkfifo(tmp_path / "images" / "z.png")
    (tmp_path / "ids.csv").write_text("id\nz.png\n")
    (tmp_path / "idx").mkdir()
    os.mkfifo(tmp_path / "idx" / "train-images-idx3-ubyte.gz")
    cases = [
        (("fit-coarse", "/dev/zero", "--out", tmp_path / "r"), "recipe /dev/zero is a device"),
        (("fit-coarse", write_recipe(tmp_path / "a.toml", {"csv": "/dev/zero", "images": str(images)}),
          "--out", tmp_path / "r"), "CSV /dev/zero is a device"),
        (("fit-coarse", write_recipe(tmp_path / "b.toml", {"csv": str(fifo), "images": str(images)}),
          "--out", tmp_path / "r"), "pipe.csv is a device, pipe or socket"),
        (("fit-coarse", recipe, "--out", tmp_path / "r", "--set", "coarse.weights=/dev/zero"),
         "weights file /dev/zero is a device"),
        (("predict", run, fifo, "--out", tmp_path / "p.csv"), "pipe.csv is a device, pipe or socket"),
        (("predict", run, "/dev/zero", "--out", tmp_path / "p.csv"), "CSV /dev/zero is a device"),
        (("predict", run, tmp_path / "ids.csv", "--out", tmp_path / "p.csv", "--images", tmp_path / "images"),
         "z.png is a device, pipe or socket"),
        (("import-weights", "/dev/zero", "--model", "test_resnet", "--out", tmp_path / "w.safetensors"),
         "weights file /dev/zero is a device"),
        (("dataset", "fashion-mnist", tmp_path / "fm", "--source", tmp_path / "idx"),
         "train-images-idx3-ubyte.gz is a device, pipe or socket"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert re.search(message, result.stderr) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "p.csv").exists()
