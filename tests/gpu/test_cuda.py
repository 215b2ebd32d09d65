"""What only a CUDA GPU runs: mixed precision, the moving average and channels_last on the GPU,
and torchrun with NCCL. Skipped where there is none (CI, these CPUs); `benchmarks/gpu_session.sh`
runs them with the GPU benchmark in one call of a GPU machine."""
import json
import os
import subprocess

import numpy as np
import pytest
import torch

from conftest import cli, torchrun_command, write_csv_dataset, write_recipe
from hierclf.data import load_input_items
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.run.folder import Run

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

GPU_STAGE = {"device": "cuda", "amp": True, "ema": True, "ema_decay": 0.9, "channels_last": True, "epochs": 10,
             "workers": 2}


def test_amp_ema_and_channels_last_on_the_gpu_learn_and_predict_as_on_the_cpu(tmp_path):
    data = write_csv_dataset(tmp_path / "data", per_class=32)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(data)}, coarse=GPU_STAGE)
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "run" / "coarse" / "summary.json").read_text())
    assert summary["oof_accuracy"] > 0.8  # three classes: chance is a third
    run = Run.open(tmp_path / "run")
    items = load_input_items(data, run.hierarchy.class_names, "id", "label")
    on_gpu = predict_items(run, items, inference=Inference(workers=0, device="cuda"))
    on_cpu = predict_items(run, items, inference=Inference(workers=0, device="cpu"))
    assert np.abs(on_gpu.probs - on_cpu.probs).max() < 0.05  # bf16 on the GPU, float32 on the CPU
    assert (on_gpu.labels == on_cpu.labels).mean() >= 0.95


def test_torchrun_with_nccl_and_one_process_trains_as_a_plain_process_does(tmp_path):
    data = write_csv_dataset(tmp_path / "data", per_class=32)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(data)},
                          coarse={**GPU_STAGE, "amp": False, "sync_batchnorm": True})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "plain").exit_code == 0
    command = torchrun_command("-q", "fit-coarse", str(recipe), "--out", str(tmp_path / "torchrun"),
                               launch=("--standalone", "--nproc-per-node", "1"))
    # the plain run's thread count, not torchrun_env's one thread: on a CPU the count changes the results
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", "NO_ALBUMENTATIONS_UPDATE": "1"})
    assert done.returncode == 0, done.stderr
    plain, launched = (np.load(tmp_path / name / "coarse" / "oof.npz") for name in ("plain", "torchrun"))
    assert (plain["ids"] == launched["ids"]).all()
    assert np.abs(plain["probs"] - launched["probs"]).max() < 1e-2  # the GPU's kernels are not bitwise repeatable
    assert json.loads((tmp_path / "torchrun" / "coarse" / "summary.json").read_text())["oof_accuracy"] > 0.8
