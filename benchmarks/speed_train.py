"""Training speed: hierclf's `fit` against the bare PyTorch loop a user would write, side by side.

Both train the same timm model from the same initial weights, with the same batches, AdamW and
cross entropy, on the same device, and validate once per epoch. The bare loop is what the
users' scripts do: tensors made once up front (in memory), or a Dataset that opens, converts,
resizes and normalises each JPEG with torchvision (from files, 2 workers). hierclf runs as
`fit_coarse` would, once decoding every epoch and once with its uint8 cache (`cache_mb`). The
loops alternate, several rounds each, and the ratio of their best images per second is printed:
this machine is shared, so only ratios measured in one process mean anything.

    python benchmarks/speed_train.py                    # both sources
    python benchmarks/speed_train.py --source memory --rounds 3
"""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from bare import JpegFiles
from harness import benchmark_parser
from hierclf import (FASHION_MNIST_CLASSES, fit, HeadConfig, Items, OutputLayout, Placement,
                    read_fashion_mnist, StageConfig)
from hierclf.data.cache import cached_items
from hierclf.data.dataset import ImageDataset, TrainingOrder, build_transform, make_loader
from hierclf.train.losses import build_layout_loss

MEAN, STD = (0.5,), (0.5,)


def bare_fit(model: torch.nn.Module, train: DataLoader, val: DataLoader, stage: StageConfig,
             device: torch.device, trained: torch.nn.Module | None = None,
             criterion: torch.nn.Module | None = None) -> list[float]:
    """The hand-written loop: AdamW, cross entropy, an accuracy pass over validation per epoch;
    `trained` is the model as DistributedDataParallel wraps it, under torchrun; `criterion` a
    cross entropy the profiler labels. Returns the seconds of each epoch."""
    model.to(device)
    trained = trained if trained is not None else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    criterion = criterion if criterion is not None else torch.nn.CrossEntropyLoss()
    seconds = []
    for epoch in range(stage.epochs):
        started = time.perf_counter()
        if hasattr(train.sampler, "set_epoch"):  # a DistributedSampler
            train.sampler.set_epoch(epoch)
        trained.train()
        for images, targets in train:
            images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(trained(images), targets)
            loss.backward()
            optimizer.step()
            loss.item()
        model.eval()
        correct = 0
        with torch.inference_mode():
            for images, targets in val:
                correct += (model(images.to(device)).argmax(1).cpu() == targets).sum().item()
        seconds.append(time.perf_counter() - started)
    return seconds


def bare_loaders(items: Items, train_rows: np.ndarray, val_rows: np.ndarray, stage: StageConfig, source: str,
                 device: torch.device) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(0)
    if source == "memory":
        pixels = torch.as_tensor(items.images).unsqueeze(1).float().div_(255)
        pixels = torch.nn.functional.interpolate(pixels, size=(stage.img_size,) * 2, mode="bilinear",
                                                 antialias=True, align_corners=False)
        pixels = (pixels - MEAN[0]) / STD[0]
        labels = torch.as_tensor(items.labels)
        make = lambda rows, shuffle: DataLoader(TensorDataset(pixels[rows], labels[rows]), batch_size=stage.batch_size,
                                                shuffle=shuffle, drop_last=shuffle, generator=generator)
    else:
        make = lambda rows, shuffle: DataLoader(
            JpegFiles(list(items.paths[rows]), items.labels[rows], stage.img_size, MEAN, STD),
            batch_size=stage.batch_size,
            shuffle=shuffle, drop_last=shuffle, num_workers=stage.workers, persistent_workers=stage.workers > 0,
            pin_memory=device.type == "cuda", generator=generator)
    return make(train_rows, True), make(val_rows, False)


def hierclf_loaders(items: Items, train_rows: np.ndarray, val_rows: np.ndarray, stage: StageConfig,
                    device: torch.device) -> tuple[DataLoader, DataLoader]:
    def make(rows: np.ndarray, training: bool) -> DataLoader:
        dataset = ImageDataset(items.subset(rows), items.labels[rows], build_transform(stage.img_size, MEAN, STD), 1)
        return make_loader(dataset, stage.batch_size, workers=stage.workers, device=device,
                           order=TrainingOrder(drop_last=True) if training else None)
    return make(train_rows, True), make(val_rows, False)


def write_jpegs(images: np.ndarray, labels: np.ndarray, folder: Path) -> Items:
    paths = []
    for row, pixels in enumerate(images):
        path = folder / f"{row:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=95)
        paths.append(str(path))
    return Items(ids=np.asarray([Path(p).stem for p in paths]), labels=labels, class_names=FASHION_MNIST_CLASSES,
                 paths=np.asarray(paths))


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--source", choices=["memory", "files", "both"], default="both")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--img-size", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds of each loop")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)

    images, labels, _ = read_fashion_mnist("train", limit=args.rows)
    rows = np.arange(len(labels))
    train_rows, val_rows = rows[rows % 5 != 0], rows[rows % 5 == 0]
    results = {}
    sources = ["memory", "files"] if args.source == "both" else [args.source]
    with tempfile.TemporaryDirectory() as folder:
        for source in sources:
            workers = 0 if source == "memory" else 2
            stage = StageConfig(model=args.model, img_size=args.img_size, in_chans=1, batch_size=args.batch_size,
                                epochs=args.epochs, lr=1e-3, weight_decay=1e-4, scheduler="none", workers=workers,
                                amp=False)
            items = (Items.from_arrays(images, labels, FASHION_MNIST_CLASSES) if source == "memory"
                     else write_jpegs(images, labels, Path(folder)))
            torch.manual_seed(0)
            initial = timm.create_model(args.model, num_classes=10, in_chans=1).state_dict()
            # the cache is made once per stage, as the bare loop's tensors are: neither is timed
            cached = cached_items(items, args.img_size, 1, budget_mb=4096, workers=workers)
            times = {"bare": [], "hierclf": [], "hierclf cached": []}
            for _ in range(args.rounds):
                for loop in times:
                    model = timm.create_model(args.model, num_classes=10, in_chans=1)
                    model.load_state_dict(initial)
                    if loop == "bare":
                        train, val = bare_loaders(items, train_rows, val_rows, stage, source, device)
                    else:
                        chosen = cached if loop == "hierclf cached" else items
                        train, val = hierclf_loaders(chosen, train_rows, val_rows, stage, device)
                    started = time.perf_counter()
                    if loop == "bare":
                        bare_fit(model, train, val, stage, device)
                    else:
                        layout = OutputLayout.single(FASHION_MNIST_CLASSES)
                        loss = build_layout_loss(layout, [HeadConfig()], ["coarse"], labels[train_rows, None])
                        fit(model, train, val, stage, loss, Placement(device))
                    times[loop].append(time.perf_counter() - started)
            seen = args.epochs * (len(train_rows) // args.batch_size * args.batch_size)
            speed = {loop: seen / min(seconds) for loop, seconds in times.items()}
            ratio = {loop: speed[loop] / speed["bare"] for loop in ("hierclf", "hierclf cached")}
            results[source] = {"images_per_second": speed, "ratio": ratio, "seconds": times}
            print(f"{source:<6} bare {speed['bare']:7.1f} img/s   hierclf {speed['hierclf']:7.1f} img/s "
                  f"(ratio {ratio['hierclf']:.3f})   with cache_mb {speed['hierclf cached']:7.1f} img/s "
                  f"(ratio {ratio['hierclf cached']:.3f})   ({args.model}, {args.img_size} px, batch "
                  f"{args.batch_size}, {len(train_rows)} training rows, {workers} workers, {device}, best of "
                  f"{args.rounds})", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
