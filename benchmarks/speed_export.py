"""Serving speed: a run exported by `hierclf export`, run by onnxruntime, against hierclf's own
prediction of the same images, side by side in one process.

Both take the same uint8 images already in memory (what a server holds after decoding a
request) and return the combined probabilities: hierclf through `predict_items` (its loader
resizes and normalises, each stage's fold models soft-vote in torch, the combiner in numpy),
onnxruntime through the one graph. The two alternate, several rounds each, and the ratio of their
best images per second is printed, with the largest difference between their probabilities.

    python benchmarks/speed_export.py runs/bench-pays-lite0-15k/hierarchical data/fashion-mnist-15k/test.csv
    python benchmarks/speed_export.py runs/digits-hierarchical data/digits/test.csv --rows 360
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image

from harness import benchmark_parser
from hierclf import export_onnx, Inference, Items, load_input_items, predict_items, Run


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("input", type=Path, help="a CSV of images the run can label")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--combiner", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=0, help="resize the images to this side first (PIL bicubic): "
                        "the graph's exact_input_size gives hierclf's outputs to 1e-4")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run = Run.open(args.run)
    found = load_input_items(args.input, run.hierarchy.class_names, run.recipe.data.id_column,
                             run.recipe.data.label_column)
    channels = run.recipe.coarse.in_chans
    images = np.stack([found.image(row, channels) for row in range(min(args.rows, len(found)))])
    if args.side:
        images = np.stack([np.asarray(Image.fromarray(image.squeeze(2) if channels == 1 else image)
                                      .resize((args.side, args.side), Image.BICUBIC)) for image in images])
        images = images if channels > 1 else images[..., None]
    items = Items.from_arrays(images if channels > 1 else images[..., 0])
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        exported = export_onnx(run, Path(folder) / "pipeline.onnx", args.combiner, tta=())
        export_seconds = time.perf_counter() - started
        session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    inference = Inference(batch_size=args.batch_size, workers=0, device="cpu", tta=())
    times: dict[str, list[float]] = {"hierclf": [], "onnxruntime": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        expected = predict_items(run, items, args.combiner, inference=inference)
        times["hierclf"].append(time.perf_counter() - started)
        started = time.perf_counter()
        probs = np.concatenate([session.run(["probs"], {"images": images[start:start + args.batch_size]})[0]
                                for start in range(0, len(images), args.batch_size)])
        times["onnxruntime"].append(time.perf_counter() - started)
    speed = {name: len(images) / min(seconds) for name, seconds in times.items()}
    gap = float(np.abs(probs - expected.probs).max())
    agree = float((probs.argmax(1) == expected.labels).mean())
    print(f"{args.run}: {len(images)} images of {images.shape[1]}×{images.shape[2]}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads; combiner {exported.about['combiner']}; export took "
          f"{export_seconds:.1f} s, {exported.megabytes:.1f} MB")
    print(f"hierclf predict_items {speed['hierclf']:8.1f} img/s   onnxruntime {speed['onnxruntime']:8.1f} img/s   "
          f"ratio {speed['onnxruntime'] / speed['hierclf']:.2f}   (best of {args.rounds}; largest probability "
          f"difference {gap:.2g}, labels agree on {agree:.2%})")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "seconds": times,
                                        "images_per_second": speed, "max_difference": gap, "agree": agree},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
