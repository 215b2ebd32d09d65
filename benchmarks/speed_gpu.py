"""Speed where the users train: hierclf on a GPU against the bare PyTorch loops a user writes,
every figure from one run of this script (at most 8 minutes on one GPU).

1. fit: images per second of `fit` against a bare loop written here, the same timm model from the
   same weights (EfficientNet-Lite0 from weights/efficientnet-lite0.safetensors where `make
   weights` made it, else from scratch), the same batches of the same JPEG files on disk, AMP
   (bf16 where the GPU has it), channels_last, without and with torch.compile; the best epoch
   after the first (compilation and the loader's start are not timed).
2. how busy the GPU is: the share of an epoch not spent waiting for the next batch (each step
   synchronised, so the wait is the loader's alone), with 0, 4, 8 and 15 loader workers.
3. predict: images per second of a flat run, and of a hierarchical run through the product and
   routed combiners, against a bare inference loop over the same fold models.
4. peak GPU memory of each.

    python benchmarks/speed_gpu.py                              # on the GPU, ~5 minutes on an H200
    python benchmarks/speed_gpu.py --device cpu --img-size 32 --jpeg-side 64 --rows 256 --train-rows 128 \\
        --model test_efficientnet --weights none --batch-size 32 --workers 2 --workers-sweep 0,2 \\
        --modes eager --rounds 1                                # the same script tried on the CPU
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader

from bare import JpegFiles
from harness import benchmark_parser
from hierclf import (FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, fit, fit_coarse, fit_fine, HeadConfig,
                    Inference, Items, OutputLayout, Placement, predict_items, read_fashion_mnist,
                    recipe_from_dict, StageConfig)
from hierclf.data.dataset import ImageDataset, TrainingOrder, build_transform, make_loader
from hierclf.models.inference import autocast
from hierclf.models.weights import load_weights_file
from hierclf.train.losses import build_layout_loss

WEIGHTS = Path("weights/efficientnet-lite0.safetensors")
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # tf_efficientnet_lite0 normalises so
TOPS = ["T-shirt/top", "Pullover", "Coat", "Shirt"]


class Timed:
    """A loader whose batches are timed: the seconds spent waiting for each (with `sync`, after
    the GPU finished the previous step, so the wait is the loader's alone) and the epoch's."""

    def __init__(self, loader: DataLoader, device: torch.device, sync: bool):
        self.loader, self.device, self.sync = loader, device, sync
        self.waits: list[float] = []
        self.epochs: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        waited, started = 0.0, time.perf_counter()
        batches = iter(self.loader)
        while True:
            if self.sync and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            before = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                break
            waited += time.perf_counter() - before
            yield batch
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.waits.append(waited)
        self.epochs.append(time.perf_counter() - started)


def write_jpegs(rows: int, side: int, folder: Path, source: Path = FASHION_MNIST_DIR) -> Items:
    """Fashion-MNIST images as RGB JPEGs of `side` px (a tint per class and noise, so they
    compress as photos do), the users' kind of input."""
    images, labels, _ = read_fashion_mnist("train", source, rows)
    rng = np.random.default_rng(0)
    tints = rng.uniform(0.6, 1.0, size=(10, 3))
    paths = []
    for row, (pixels, label) in enumerate(zip(images, labels)):
        grey = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR), dtype=np.float32)
        rgb = grey[:, :, None] * tints[label] + rng.normal(0, 6, size=(side, side, 3))
        path = folder / f"{row:05d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return Items(ids=np.asarray([Path(p).stem for p in paths]), labels=labels, class_names=FASHION_MNIST_CLASSES,
                 paths=np.asarray(paths))


def new_model(args: argparse.Namespace, stage: StageConfig) -> torch.nn.Module:
    model = timm.create_model(args.model, num_classes=10)
    if args.weights != "none" and Path(args.weights).is_file():
        load_weights_file(model, Path(args.weights), "weights", new_head=True)
    return model


def bare_fit(model: torch.nn.Module, train: Timed, val: DataLoader, stage: StageConfig,
             device: torch.device) -> None:
    """The loop a user writes for a GPU: AdamW, cross entropy, autocast, channels_last, maybe
    compiled, an accuracy pass over validation per epoch."""
    model.to(device).to(memory_format=torch.channels_last)
    trained = torch.compile(model) if stage.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    for _ in range(stage.epochs):
        trained.train()
        for images, targets in train:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            targets = targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, True):
                loss = criterion(trained(images), targets)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode(), autocast(device, True):
            for images, targets in val:
                images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                model(images).argmax(1).cpu()


def one_fit(kind: str, args: argparse.Namespace, items: Items, stage: StageConfig, device: torch.device,
            sync: bool) -> dict[str, float]:
    """One fit of `kind` (bare or hierclf): its best epoch's images per second (the first epoch
    not counted), the share of that epoch the GPU did not wait for data, and its peak memory."""
    rows = np.arange(len(items))
    train_rows, val_rows = rows[rows % 8 != 0], rows[rows % 8 == 0]
    torch.manual_seed(0)
    model = new_model(args, stage)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if kind == "bare":
        generator = torch.Generator().manual_seed(0)
        make = lambda chosen, shuffle: DataLoader(  # noqa: E731
            JpegFiles(list(items.paths[chosen]), items.labels[chosen], stage.img_size, MEAN, STD),
            batch_size=stage.batch_size,
            shuffle=shuffle, drop_last=shuffle, num_workers=stage.workers, persistent_workers=stage.workers > 0,
            pin_memory=device.type == "cuda", generator=generator)
        train, val = Timed(make(train_rows, True), device, sync), make(val_rows, False)
        bare_fit(model, train, val, stage, device)
    else:
        transform = build_transform(stage.img_size, MEAN, STD)
        make = lambda chosen, training: make_loader(  # noqa: E731
            ImageDataset(items.subset(chosen), items.labels[chosen], transform, 3), stage.batch_size,
            workers=stage.workers, device=device, order=TrainingOrder(drop_last=True) if training else None)
        train, val = Timed(make(train_rows, True), device, sync), make(val_rows, False)
        layout = OutputLayout.single(FASHION_MNIST_CLASSES)
        loss = build_layout_loss(layout, [HeadConfig()], ["coarse"], items.labels[train_rows, None])
        fit(model, train, val, stage, loss, Placement(device))
    best = int(np.argmin(train.epochs[1:])) + 1
    images = len(train_rows) // stage.batch_size * stage.batch_size
    return {"images_per_second": images / train.epochs[best], "busy": 1 - train.waits[best] / train.epochs[best],
            "peak_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else 0.0}


def fit_figures(args: argparse.Namespace, items: Items, device: torch.device) -> dict[str, Any]:
    """Part 1 (compile off and on) and part 2 (the workers sweep)."""
    base = StageConfig(model=args.model, img_size=args.img_size, in_chans=3, batch_size=args.batch_size, epochs=3,
                       lr=1e-3, weight_decay=1e-4, scheduler="none", workers=args.workers, amp=True,
                       channels_last=True, device=str(device))
    figures: dict[str, Any] = {"fit": {}, "workers": {}}
    for compiled in [mode == "compiled" for mode in args.modes]:
        stage = dataclasses.replace(base, compile=compiled)
        pair = {kind: one_fit(kind, args, items, stage, device, sync=False) for kind in ("bare", "hierclf")}
        pair["ratio"] = pair["hierclf"]["images_per_second"] / pair["bare"]["images_per_second"]
        figures["fit"]["compiled" if compiled else "eager"] = pair
        print(f"fit, {'compiled' if compiled else 'eager':<8}: bare {pair['bare']['images_per_second']:8.0f} img/s, "
              f"hierclf {pair['hierclf']['images_per_second']:8.0f} img/s, ratio {pair['ratio']:.3f}; peak "
              f"{pair['hierclf']['peak_gb']:.1f} GB (bare {pair['bare']['peak_gb']:.1f} GB)", flush=True)
    for workers in args.workers_sweep:
        stage = dataclasses.replace(base, workers=workers, epochs=2)
        pair = {kind: one_fit(kind, args, items, stage, device, sync=True) for kind in ("bare", "hierclf")}
        figures["workers"][workers] = pair
        print(f"workers {workers:>2}: GPU busy bare {pair['bare']['busy']:6.1%}, "
              f"hierclf {pair['hierclf']['busy']:6.1%}; img/s (each step synchronised) bare "
              f"{pair['bare']['images_per_second']:7.0f}, hierclf {pair['hierclf']['images_per_second']:7.0f}",
              flush=True)
    return figures


def bare_predict(run: Path, items: Items, args: argparse.Namespace, device: torch.device) -> np.ndarray:
    """The inference loop a user writes over a run's fold models: soft vote, autocast, channels_last."""
    from hierclf.models.saved import load_model

    models = [load_model(folder, device)[0].to(memory_format=torch.channels_last)
              for folder in sorted((run / "coarse").glob("fold-*"))]
    loader = DataLoader(JpegFiles(list(items.paths), items.labels, args.img_size, MEAN, STD),
                        batch_size=args.predict_batch, num_workers=args.workers, pin_memory=device.type == "cuda")
    probs = []
    with torch.inference_mode(), autocast(device, True):
        for images, _ in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            probs.append(sum(model(images).float().softmax(1) for model in models).cpu() / len(models))
    return torch.cat(probs).numpy()


def predict_figures(args: argparse.Namespace, items: Items, device: torch.device, folder: Path) -> dict[str, Any]:
    """Part 3: a flat run and a hierarchical run (tops grouped, one specialist) trained for one
    epoch on a few rows (timing does not depend on accuracy), then every image predicted."""
    train = items.subset(np.arange(min(len(items), args.train_rows)))
    stage = {"model": args.model, "img_size": args.img_size, "in_chans": 3, "epochs": 1, "batch_size": 64,
             "workers": args.workers, "device": str(device), "channels_last": True,
             **({"weights": str(Path(args.weights).resolve())} if Path(args.weights).is_file() else {})}
    base = {"data": {"class_names": list(FASHION_MNIST_CLASSES)}, "folds": {"count": 2}, "coarse": stage}
    fit_coarse(recipe_from_dict(base), folder / "flat", items=train)
    fit_coarse(recipe_from_dict({**base, "hierarchy": {"groups": [TOPS], "group_names": ["tops"]}}),
               folder / "hier", items=train)
    fit_fine(folder / "hier", items=train)
    inference = Inference(batch_size=args.predict_batch, workers=args.workers, device=str(device))
    timed = {"bare": lambda: bare_predict(folder / "flat", items, args, device),
             "flat": lambda: predict_items(folder / "flat", items, inference=inference),
             "product": lambda: predict_items(folder / "hier", items, combiner="product", inference=inference),
             "routed": lambda: predict_items(folder / "hier", items, combiner="routed", inference=inference)}
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    peak = {}
    for _ in range(args.rounds):
        for name, run in timed.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
            peak[name] = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else 0.0
    speed = {name: len(items) / min(values) for name, values in seconds.items()}
    figures = {"images_per_second": speed, "peak_gb": peak,
               "ratio": {name: speed[name] / speed["bare"] for name in ("flat", "product", "routed")}}
    for name in timed:
        print(f"predict {name:<8} {speed[name]:8.0f} img/s  ({speed[name] / speed['bare']:.3f} × bare)  peak "
              f"{peak[name]:.1f} GB", flush=True)
    return figures


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--source", type=Path, default=FASHION_MNIST_DIR, help="the folder of Fashion-MNIST's idx files")
    parser.add_argument("--model", default="tf_efficientnet_lite0")
    parser.add_argument("--weights", default=str(WEIGHTS), help="starting weights, or none")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--jpeg-side", type=int, default=256, help="the side of the JPEG files on disk")
    parser.add_argument("--rows", type=int, default=4096, help="JPEG files written and trained on")
    parser.add_argument("--train-rows", type=int, default=1024, help="rows the predict part's runs train on")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--predict-batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8, help="loader workers of parts 1 and 3")
    parser.add_argument("--workers-sweep", default="0,4,8,15", help="loader workers tried in part 2")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds of each predict loop")
    parser.add_argument("--modes", default="eager,compiled", help="part 1's modes: eager, compiled or both")
    parser.add_argument("--out", type=Path, default=None, help="write every figure as JSON here")
    args = parser.parse_args()
    args.workers_sweep = [int(n) for n in args.workers_sweep.split(",") if n.strip()]
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        items = write_jpegs(args.rows, args.jpeg_side, Path(folder), args.source)
        print(f"{args.rows} JPEGs of {args.jpeg_side} px written; {args.model} at {args.img_size} px, batch "
              f"{args.batch_size}, weights {args.weights if Path(args.weights).is_file() else 'none (scratch)'}",
              flush=True)
        figures = {"args": {k: str(v) for k, v in vars(args).items()}, **fit_figures(args, items, device),
                   "predict": predict_figures(args, items, device, Path(folder))}
    figures["seconds"] = time.perf_counter() - started
    print(f"all figures in {figures['seconds']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
