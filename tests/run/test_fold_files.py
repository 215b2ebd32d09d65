"""A run's own files read back are checked: damaged or edited, each ends in one line naming the
file, exit 2, never a traceback or a figure computed from it."""
import json
import re
import shutil

import numpy as np
import pytest

from conftest import cli, write_recipe


def _edit_json(path, change):
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def _edit_npz(path, **changes):
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(changes)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def _append(path, text):
    with path.open("a") as handle:
        handle.write(text)


FOLD = "coarse/fold-1"
def _foreign_weights(path):
    import torch
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(3, 5)}, str(path))


CASES = [
    ("metrics", lambda run: _append(run / FOLD / "metrics.jsonl", "{not json\n"),
     "evaluate", r"metrics.jsonl: line 11 is not JSON"),
    ("seconds", lambda run: _append(run / FOLD / "metrics.jsonl", '{"epoch": 11, "seconds": "slow"}\n'),
     "evaluate", r"metrics.jsonl: line 11: seconds is 'slow'"),
    ("result", lambda run: _edit_json(run / FOLD / "result.json", lambda r: r.update(val_accuracy=3)),
     "evaluate", r"result.json: val_accuracy is 3, expected >= 0.0 and <= 1.0"),
    ("rows", lambda run: _edit_json(run / FOLD / "result.json", lambda r: r.update(train_rows="40")),
     "evaluate", r"result.json: train_rows is '40', not a finite whole number"),
    ("val", lambda run: _edit_npz(run / FOLD / "val.npz", probs=np.full((20, 3), np.nan, np.float32)),
     "fit-coarse", r"val.npz: its probabilities are not all finite"),
    ("width", lambda run: _edit_npz(run / FOLD / "val.npz", probs=np.full((20, 2), 0.5, np.float32)),
     "fit-coarse", r"val.npz: probs of shape \(20, 2\) for 20 ids, expected \(20, 3\)"),
    ("folds", lambda run: _edit_npz(run / "folds.npz", labels=np.full(60, 7)),
     "evaluate", r"folds.npz: a label is outside 0..2"),
    ("oof", lambda run: _edit_npz(run / "coarse" / "oof.npz", probs=np.full((60, 3), 2.0, np.float32)),
     "evaluate", r"oof.npz: its probabilities are not all finite numbers from 0 to 1; delete it and run"),
    ("oof-rows", lambda run: _edit_npz(run / "coarse" / "oof.npz", ids=np.asarray([f"x{i}" for i in range(60)])),
     "evaluate", r"oof.npz: it holds rows that are not the run's"),
    ("summary", lambda run: _edit_json(run / "coarse" / "summary.json", lambda m: m.update(oof_macro_f1="high")),
     "fit-fine-over", r"summary.json: oof_macro_f1 is 'high', not a finite number"),
    ("weights", lambda run: _foreign_weights(run / FOLD / "weights.safetensors"),
     "predict", r"weights.safetensors does not fit its model.json \(.*\); delete the fold's folder"),
    ("model", lambda run: _edit_json(run / FOLD / "model.json", lambda m: m.update(std=[0.0])),
     "predict", r"model.json: std\[0\] is 0.0, expected > 0"),
    ("arch", lambda run: _edit_json(run / FOLD / "model.json", lambda m: m.update(arch="resnet_nope")),
     "predict", r"model.json: arch 'resnet_nope' is no architecture timm has on this machine; delete the fold's"),
    ("arch-export", lambda run: _edit_json(run / FOLD / "model.json", lambda m: m.update(arch="resnet_nope")),
     "export", r"model.json: arch 'resnet_nope' is no architecture timm has on this machine; delete the fold's"),
    ("hub", lambda run: _edit_json(run / FOLD / "model.json", lambda m: m.update(arch="hf-hub:timm/resnet18.a1_in1k")),
     "predict", r"arch 'hf-hub:timm/resnet18.a1_in1k' is no architecture timm has on this machine \(a hub name: "
                r"a saved run is rebuilt offline"),
]


@pytest.mark.parametrize("name, damage, command, message", CASES, ids=[case[0] for case in CASES])
def test_a_damaged_file_of_a_run_is_refused_in_one_line(flat_run, tmp_path, name, damage, command, message):
    run_dir, recipe, train_csv, _ = flat_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    if name in ("val", "width"):  # the out-of-fold file is gathered again from the folds' files
        (run / "coarse" / "oof.npz").unlink()
    damage(run)
    over = write_recipe(tmp_path / "over.toml", {"csv": str(train_csv)},
                        hierarchy={"groups": [["left", "right"]], "coarse_run": str(run)})
    args = {"evaluate": ("evaluate", run), "fit-coarse": ("-q", "fit-coarse", recipe, "--out", run),
            "fit-fine-over": ("-q", "fit-coarse", over, "--out", tmp_path / "over"),
            "predict": ("predict", run, train_csv, "--out", tmp_path / "p.csv"),
            "export": ("export", run, "--out", tmp_path / "p.onnx")}[command]
    result = cli(*args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert re.search(message, result.stderr), result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "p.csv").exists()
