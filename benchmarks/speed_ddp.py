"""Training one fold with several processes (torchrun, DistributedDataParallel) against one
process, for hierclf and for the bare DDP loop a user would write, on this machine.

Four trainings of the same model at the same global batch, one after another:
hierclf `fit-coarse` in one process (torch's default threads: every core) and under
`torchrun --nproc-per-node N` (gloo on the CPU, NCCL on CUDA); then the bare loop, one process
and N processes (DistributedSampler, DDP, tensors made once up front). Each reports the seconds
of each epoch (training plus validation); the median of the epochs after the first is compared.
Printed: each pipeline's speed-up of N processes over one, and hierclf's epoch time relative
to the bare loop's at the same process count.

    python benchmarks/speed_ddp.py                       # 6,000 Fashion-MNIST rows, 5 epochs, 2 processes
    python benchmarks/speed_ddp.py --rows 12000 --epochs 4
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from harness import benchmark_parser

MEAN, STD = 0.5, 0.5


def bare(args: argparse.Namespace) -> None:
    """The hand-written loop (benchmarks/speed_train.py's) in this process, one of torchrun's or
    alone: prints each epoch's seconds as JSON from rank 0."""
    import timm
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from hierclf import StageConfig, read_fashion_mnist
    from speed_train import bare_fit

    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("gloo")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    images, labels, _ = read_fashion_mnist("train", limit=args.rows)
    pixels = torch.as_tensor(images).unsqueeze(1).float().div_(255)
    pixels = torch.nn.functional.interpolate(pixels, size=(args.img_size,) * 2, mode="bilinear", antialias=True)
    pixels, targets = (pixels - MEAN) / STD, torch.as_tensor(labels)
    cut = len(pixels) * 4 // 5
    train, val = TensorDataset(pixels[:cut], targets[:cut]), TensorDataset(pixels[cut:], targets[cut:])
    torch.manual_seed(0)
    model = timm.create_model(args.model, num_classes=10, in_chans=1)
    sampler = DistributedSampler(train, shuffle=True, drop_last=True, seed=0) if world > 1 else None
    loader = DataLoader(train, batch_size=args.batch_size // world, sampler=sampler, shuffle=sampler is None,
                        drop_last=True)
    val_loader = DataLoader(val, batch_size=args.batch_size,
                            sampler=DistributedSampler(val, shuffle=False) if world > 1 else None)
    stage = StageConfig(lr=3e-3, weight_decay=5e-4, epochs=args.epochs)
    seconds = bare_fit(model, loader, val_loader, stage, torch.device("cpu"),
                       trained=DistributedDataParallel(model) if world > 1 else None)
    if world <= 1 or dist.get_rank() == 0:
        print(json.dumps({"seconds": seconds}))
    if world > 1:
        dist.destroy_process_group()


def _launch(command: list[str], processes: int) -> list[str]:
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"] \
        if processes > 1 else [sys.executable]
    return prefix + command


def _run(command: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done


def _median_after_first(seconds: list[float]) -> float:
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--bare", action="store_true", help="run the bare loop in this process (used internally)")
    args = parser.parse_args()
    if args.bare:
        bare(args)
        return

    import tomli_w

    from hierclf import write_fashion_mnist

    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        write_fashion_mnist(root / "data", train_limit=args.rows, test_limit=10)
        recipe = root / "recipe.toml"
        recipe.write_text(tomli_w.dumps({
            "data": {"csv": str(root / "data" / "train.csv")}, "folds": {"count": 1, "holdout": 0.2},
            "coarse": {"model": args.model, "img_size": args.img_size, "in_chans": 1, "batch_size": args.batch_size,
                       "lr": 3e-3, "weight_decay": 5e-4, "epochs": args.epochs, "workers": 0, "cache_mb": 512,
                       "device": "cpu"}}))
        epochs: dict[tuple[str, int], list[float]] = {}
        for count in (1, args.processes):
            out = root / f"run-{count}"
            _run(_launch(["-m", "hierclf", "-q", "fit-coarse", str(recipe), "--out", str(out)], count))
            metrics = (out / "coarse" / "fold-0" / "metrics.jsonl").read_text()
            records = [json.loads(line) for line in metrics.splitlines()]
            epochs["hierclf", count] = [record["seconds"] for record in records]
            bare_run = _run(_launch([__file__, "--bare", "--rows", str(args.rows), "--epochs", str(args.epochs),
                                     "--model", args.model, "--img-size", str(args.img_size),
                                     "--batch-size", str(args.batch_size)], count))
            epochs["bare", count] = json.loads(bare_run.stdout.strip().splitlines()[-1])["seconds"]

    many = args.processes
    print(f"{args.model} at {args.img_size} px, global batch {args.batch_size}, {args.rows * 4 // 5} training rows, "
          f"{args.epochs} epochs, {os.cpu_count()} cores, torch {torch.__version__}")
    print("| pipeline | processes | seconds per epoch |")
    print("| --- | --- | --- |")
    for (name, count), seconds in epochs.items():
        print(f"| {name} | {count} | {_median_after_first(seconds):.2f} |")
    for name in ("hierclf", "bare"):
        speedup = _median_after_first(epochs[name, 1]) / _median_after_first(epochs[name, many])
        print(f"{name}: {many} processes are {speedup:.2f}× as fast as one")
    for count in (1, many):
        ratio = _median_after_first(epochs["bare", count]) / _median_after_first(epochs["hierclf", count])
        print(f"hierclf vs bare loop, {count} process{'es' if count > 1 else ''}: {ratio:.3f} of its speed")


if __name__ == "__main__":
    main()
