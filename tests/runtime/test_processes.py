"""Several processes training one fold (torchrun): shards of each batch, rank 0 writing, the same
result as one process."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Killed, cli, kill_after_saving, torchrun_command, torchrun_env, write_csv_dataset, write_recipe
from hierclf.data.dataset import TrainingOrder, make_loader
from hierclf.data.sampling import ShardSampler
from hierclf.runtime.processes import Processes
from hierclf.errors import HierclfError


class _Rows(torch.utils.data.Dataset):
    """Rows that are their own image: a batch shows which rows it drew."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitems__(self, rows):
        rows = torch.as_tensor(rows)
        return rows, rows, rows


def _batches(loader) -> list[list[int]]:
    return [sorted(batch[2].tolist()) for batch in loader]


def test_shard_sampler_gives_each_process_every_world_th_row_of_one_order():
    order = [7, 3, 9, 0, 5, 1, 8, 2, 6, 4, 10]
    kept = [ShardSampler(order, rank, 2, drop_to=4) for rank in range(2)]  # two global batches of 4
    assert [list(shard) for shard in kept] == [[7, 9, 5, 8], [3, 0, 1, 2]] and len(kept[0]) == 4
    padded = [ShardSampler(order, rank, 2) for rank in range(2)]  # 11 rows padded to 12 from the start
    assert [list(shard) for shard in padded] == [[7, 9, 5, 8, 6, 10], [3, 0, 1, 2, 4, 7]] and len(padded[1]) == 6
    tiny = [list(ShardSampler([4], rank, 3)) for rank in range(3)]
    assert tiny == [[4], [4], [4]]  # every process has a batch, or the others would wait for its gradients


@pytest.mark.parametrize("sampler, cap", [("shuffle", 0), ("balanced", 0), ("shuffle", 5), ("balanced", 6)])
def test_processes_batches_together_are_the_batch_one_process_draws(sampler, cap):
    """Each epoch, batch k of rank 0 and of rank 1 together hold exactly one process's batch k (at
    the global batch size), with plain shuffling, balanced sampling and the class cap alike."""
    labels = np.arange(40) % 3
    dataset = _Rows(40)

    def loader(batch, shard):
        return make_loader(dataset, batch, workers=0, device=torch.device("cpu"), seed=5, shard=shard,
                           order=TrainingOrder(sampler=sampler, class_cap=cap, labels=labels, drop_last=True))

    alone = loader(8, (0, 1))
    shards = [loader(4, (rank, 2)) for rank in range(2)]
    for _ in range(2):  # two epochs: the processes' generators move on alike
        expected = _batches(alone)
        got = [_batches(shard) for shard in shards]
        assert len(got[0]) == len(got[1]) == len(expected) == len(alone) == len(shards[0])
        assert [sorted(a + b) for a, b in zip(*got)] == expected


def test_unshuffled_shards_cover_every_row_once():
    shards = [make_loader(_Rows(7), 3, workers=0, device=torch.device("cpu"), shard=(rank, 2))
              for rank in range(2)]
    rows = sorted(row for shard in shards for batch in shard for row in batch[2].tolist())
    assert rows == list(range(7))


def test_each_process_takes_its_own_gpu_and_its_own_draws():
    two = Processes(rank=1, world=2, local_rank=1)
    assert two.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert two.device(torch.device("cpu")) == torch.device("cpu")
    assert Processes().device(torch.device("cuda")) == torch.device("cuda")
    with pytest.raises(HierclfError, match="MPS"):
        two.device(torch.device("mps"))
    assert Processes().seed(3) == 3 and Processes(rank=0, world=2).seed(3) == 3
    assert two.seed(3) != 3


def test_sync_batchnorm_keeps_the_weights_names():
    import timm

    model = timm.create_model("test_resnet", num_classes=3)
    names = list(model.state_dict())
    Processes(rank=0, world=2).sync_batchnorm(model)
    assert any(isinstance(module, torch.nn.SyncBatchNorm) for module in model.modules())
    assert list(model.state_dict()) == names  # saved weights load into a plain model


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_command(*args), capture_output=True, text=True, env=torchrun_env(), timeout=600)


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_two_processes_under_torchrun_train_as_one_process_does(tmp_path):
    """The coarse stage and a specialist trained by `torchrun --nproc-per-node 2` (gloo) and by one
    process at the same global batch: the same out-of-fold probabilities within 1e-3, the same
    best epoch and validation scores every epoch, and the run folder written once. Freezing,
    accumulation, balanced sampling with a class cap, the learning rate scaled to the step's
    images (all processes' together) and the validation split all take part."""
    data = write_csv_dataset(tmp_path / "data", per_class=32)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(data)},
                          coarse={"model": "test_vit", "epochs": 6, "batch_size": 8, "accumulate": 2,
                                  "freeze_epochs": 1, "sampler": "balanced", "class_cap": 24, "lr_base_batch": 8},
                          folds={"count": 2, "seed": 0}, hierarchy={"groups": [["middle", "right"]]})
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli("fit-coarse", recipe, "--out", one).exit_code == 0
    assert cli("fit-fine", one).exit_code == 0
    coarse = _torchrun("fit-coarse", str(recipe), "--out", str(two))
    assert coarse.returncode == 0, coarse.stderr
    fine = _torchrun("fit-fine", str(two))
    assert fine.returncode == 0, fine.stderr

    assert _files(two) == _files(one)
    for output in (coarse, fine):  # rank 0 reports, once
        assert output.stdout.count("out-of-fold (") == 1
        assert output.stderr.count("fold 0: 48 training rows") + output.stderr.count("fold 0: 32 training rows") == 1
        assert "2 processes, each 4 images of every batch" in output.stderr
        assert "lr 0.00424 for steps of 16 images (lr 0.003 at 8)" in output.stderr
    for stage in ("coarse", "fine/middle+right"):
        alone, together = np.load(one / stage / "oof.npz"), np.load(two / stage / "oof.npz")
        assert (alone["ids"] == together["ids"]).all()
        assert np.abs(alone["probs"] - together["probs"]).max() < 1e-3
        for fold in (0, 1):
            folder = f"{stage}/fold-{fold}"
            assert json.loads((one / folder / "result.json").read_text())["best_epoch"] == \
                json.loads((two / folder / "result.json").read_text())["best_epoch"]
            epochs = [json.loads(line) for line in (two / folder / "metrics.jsonl").read_text().splitlines()]
            assert [epoch["epoch"] for epoch in epochs] == [1, 2, 3, 4, 5, 6]  # written by one process
            alone_epochs = [json.loads(line) for line in (one / folder / "metrics.jsonl").read_text().splitlines()]
            assert [e["val_accuracy"] for e in epochs] == [e["val_accuracy"] for e in alone_epochs]
            assert np.allclose([e["train_loss"] for e in epochs], [e["train_loss"] for e in alone_epochs], atol=1e-4)
    for stage in ("coarse", "fine/middle+right"):  # it learned: the majority class holds 2/3 and 1/2
        assert json.loads((two / stage / "summary.json").read_text())["oof_accuracy"] > 0.9


def test_an_error_on_rank_0_stops_every_process_with_one_message(tmp_path):
    data = write_csv_dataset(tmp_path / "data", per_class=8)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(data)}, coarse={"batch_size": 7})
    done = _torchrun("fit-coarse", str(recipe), "--out", str(tmp_path / "run"))
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("hierclf: error:")]
    assert lines == ["hierclf: error: coarse.batch_size = 7 is the batch of all 2 processes together; "
                     "make it a multiple of 2"]
    assert not (tmp_path / "run").exists()


def test_a_fold_cut_short_resumes_under_torchrun_on_every_process(tmp_path, monkeypatch):
    """One process stops after epoch 2 of fold 0 (its resume.safetensors written); two processes
    under torchrun then resume from it, each loading rank 0's file, and end as one uninterrupted
    process does."""
    data = write_csv_dataset(tmp_path / "data", per_class=16)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(data)},
                          coarse={"model": "test_vit", "epochs": 4, "batch_size": 8}, folds={"count": 2, "seed": 0})
    assert cli("fit-coarse", recipe, "--out", tmp_path / "whole").exit_code == 0
    kill_after_saving(monkeypatch, epoch=2)
    with pytest.raises(Killed):
        cli("fit-coarse", recipe, "--out", tmp_path / "cut")
    assert (tmp_path / "cut" / "coarse" / "fold-0" / "resume.safetensors").is_file()
    resumed = _torchrun("fit-coarse", str(recipe), "--out", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("coarse fold 0: resuming after epoch 2 of 4") == 1
    lines = (tmp_path / "cut" / "coarse" / "fold-0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    whole, cut = np.load(tmp_path / "whole" / "coarse" / "oof.npz"), np.load(tmp_path / "cut" / "coarse" / "oof.npz")
    assert np.abs(whole["probs"] - cut["probs"]).max() < 1e-3
    assert not (tmp_path / "cut" / "coarse" / "fold-0" / "resume.safetensors").exists()


def test_two_machines_meet_through_a_rendezvous_and_train_as_one_process(tmp_path):
    """`torchrun --nnodes 2 --rdzv-backend c10d --rdzv-endpoint …` started twice, as on two
    machines sharing the run folder (here both on this one, one process each): they train the
    fold together, the second machine prints nothing, and the result is one process's."""
    import socket

    data = write_csv_dataset(tmp_path / "data", per_class=16)
    recipe = write_recipe(tmp_path / "recipe.toml", {"csv": str(data)},
                          coarse={"model": "test_vit", "epochs": 3, "batch_size": 8}, folds={"count": 2, "seed": 0})
    assert cli("fit-coarse", recipe, "--out", tmp_path / "one").exit_code == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = ("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
              f"127.0.0.1:{port}", "--rdzv-id", "test")
    command = torchrun_command("fit-coarse", str(recipe), "--out", str(tmp_path / "two"), launch=launch)
    machines = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=torchrun_env())
                for _ in range(2)]
    outputs = [machine.communicate(timeout=600) for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs
    reports = [stdout.count("out-of-fold (") + stderr.count("coarse fold 0: ") for stdout, stderr in outputs]
    assert sorted(reports) == [0, 2]  # the machine with rank 0 reports; the other is silent
    alone, together = np.load(tmp_path / "one" / "coarse" / "oof.npz"), np.load(tmp_path / "two" / "coarse" / "oof.npz")
    assert np.abs(alone["probs"] - together["probs"]).max() < 1e-3


def test_predict_under_torchrun_shards_the_input_by_rank_and_joins_it(flat_run, tmp_path):
    run, _, train_csv, _ = flat_run
    assert cli("predict", run, train_csv, "--out", tmp_path / "whole.csv", "--probs", "--workers", "0").exit_code == 0
    done = _torchrun("predict", str(run), str(train_csv), "--out", str(tmp_path / "split.csv"), "--probs",
                     "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert "wrote shard 0 of 2" in done.stdout and "wrote shard 1 of 2" in done.stdout
    assert done.stdout.count("joined them into") == 1
    assert (tmp_path / "split.csv").read_text() == (tmp_path / "whole.csv").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["split.csv", "whole.csv"]
    both = _torchrun("predict", str(run), str(train_csv), "--out", str(tmp_path / "x.csv"), "--shard", "0/2")
    assert "hierclf: error: --shard: under torchrun each process predicts the shard of its rank" in both.stderr
