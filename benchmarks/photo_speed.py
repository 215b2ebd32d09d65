"""How many training images a second one core gives each pretrained backbone at each input size:
the figures that size the photo-set benchmarks (docs/benchmarks.md) before any run is planned.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/photo_speed.py --model tf_efficientnet_lite0 \\
        --model tf_efficientnet_lite2 --size 64 --size 96 --size 128 --size 160 --size 192

Each model and size trains `--steps` AdamW steps on random batches of `--batch` (after two
warm-up steps), in train mode with the classifier of `--classes`; the figure is images per
second of those steps alone (no decoding, no validation: an epoch costs more)."""
from __future__ import annotations

import argparse
import time

import timm
import torch


def images_per_second(model_name: str, size: int, batch: int, steps: int, classes: int) -> float:
    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=classes).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images, targets = torch.randn(batch, 3, size, size), torch.randint(0, classes, (batch,))
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--size", action="append", type=int, required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    print("| model | " + " | ".join(f"{size} px" for size in args.size) + " |")
    print("| --- |" + " --- |" * len(args.size))
    for name in args.model:
        rates = [images_per_second(name, size, args.batch, args.steps, args.classes) for size in args.size]
        print(f"| {name} | " + " | ".join(f"{rate:.1f}" for rate in rates) + " |", flush=True)


if __name__ == "__main__":
    main()
