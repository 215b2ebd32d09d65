"""Prediction at scale: time grows linearly with the images, peak memory does not grow.

A flat run (one fold) labels 10,000 and then 40,000 PNG files. Each size runs in a fresh
process, which reports its time and its peak resident memory (`ru_maxrss`). Predict streams
batches and keeps only each image's probabilities, so 4× the images should take about 4× the
time in about the same memory, in the main process and in each loader worker.

    python benchmarks/speed_scale.py
    python benchmarks/speed_scale.py --sizes 10000,40000 --model resnet18
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from harness import benchmark_parser
from hierclf import (FASHION_MNIST_CLASSES, fit_coarse, Inference, Items, load_input_items, predict_items,
                    read_fashion_mnist, recipe_from_dict, write_predictions)


def write_images(folder: Path, count: int) -> None:
    """`count` PNG files (Fashion-MNIST's training images, repeated as needed)."""
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return
    folder.mkdir(parents=True, exist_ok=True)
    images, _, _ = read_fashion_mnist("train")
    for row in range(count):
        Image.fromarray(images[row % len(images)]).save(folder / f"{row:06d}.png")


def measure(run: Path, folder: Path, workers: int, batch_size: int) -> None:
    """In this (fresh) process: predict every image of `folder`, print seconds and peak memory."""
    started = time.perf_counter()
    items = load_input_items(folder, FASHION_MNIST_CLASSES)
    predictions = predict_items(run, items, inference=Inference(batch_size=batch_size, workers=workers))
    write_predictions(folder.parent / f"{folder.name}.csv", predictions)
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    worker_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest loader worker
    print(json.dumps({"images": len(items), "seconds": seconds, "peak_mib": peak_mib, "worker_peak_mib": worker_mib}))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-speed-scale"))
    parser.add_argument("--sizes", default="10000,40000")
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--measure", nargs=2, metavar=("RUN", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.measure:
        measure(Path(args.measure[0]), Path(args.measure[1]), args.workers, args.batch_size)
        return

    run = args.out / "run"
    if not (run / "coarse" / "oof.npz").is_file():
        images, labels, _ = read_fashion_mnist("train", limit=1000)
        recipe = recipe_from_dict({"folds": {"count": 1}, "coarse": {
            "model": args.model, "img_size": args.img_size, "in_chans": 1, "epochs": 1, "workers": 0}})
        fit_coarse(recipe, run, items=Items.from_arrays(images, labels, FASHION_MNIST_CLASSES))
    results = []
    for size in (int(text) for text in args.sizes.split(",")):
        folder = args.out / f"images-{size}"
        write_images(folder, size)
        output = subprocess.run([sys.executable, __file__, "--measure", str(run), str(folder), "--workers",
                                 str(args.workers), "--batch-size", str(args.batch_size)],
                                check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.strip().splitlines()[-1]))
        print(f"{size:>7} images: {results[-1]['seconds']:6.1f} s, peak memory {results[-1]['peak_mib']:6.0f} MiB "
              f"(largest loader worker {results[-1]['worker_peak_mib']:.0f} MiB)", flush=True)
    first, last = results[0], results[-1]
    time_ratio = last["seconds"] / first["seconds"]
    memory_ratio = max(last["peak_mib"] / first["peak_mib"], last["worker_peak_mib"] / first["worker_peak_mib"])
    print(f"{last['images'] / first['images']:.0f}× the images: {time_ratio:.2f}× the time, "
          f"{memory_ratio:.3f}× the peak memory ({last['peak_mib'] - first['peak_mib']:+.0f} MiB)")
    (args.out / "results.json").write_text(json.dumps({"results": results, "time_ratio": time_ratio,
                                                        "memory_ratio": memory_ratio}, indent=2) + "\n")


if __name__ == "__main__":
    main()
