"""What the Fashion-MNIST benchmarks share: their command-line arguments and training keys, so
every benchmark trains the same way unless it says otherwise."""
from __future__ import annotations

import argparse
from pathlib import Path


def fashion_parser(doc: str, out: str, train_limit: int, epochs: int, test_limit: int = 5000) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--train-limit", type=int, default=train_limit)
    parser.add_argument("--test-limit", type=int, default=test_limit)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    return parser


def fashion_stage(args: argparse.Namespace) -> dict:
    """The [coarse] keys every run starts from."""
    return {"model": args.model, "img_size": args.img_size, "in_chans": 1, "batch_size": 128, "lr": 3e-3,
            "weight_decay": 5e-4, "scheduler": "cosine", "warmup_epochs": 1, "epochs": args.epochs,
            "workers": args.workers}
