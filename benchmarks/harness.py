"""What the benchmark scripts share, over the library's public API (`import hierclf`): the
parser every script starts from (its docstring as the help; a recipe with --set, an --out), the
recipe built from them, a timer that keeps the best of several rounds, and the markdown table
docs/benchmarks.md takes. A script adds only what is its own, and imports the library as a
user does (`from hierclf import …`), unless the inside is what it measures (tests/test_benchmarks.py
lists those and why).

    from harness import benchmark_parser, best_rates, markdown_table, recipe_of
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import hierclf


def benchmark_parser(doc: str, recipe: bool = False, out: bool = False, out_required: bool = False,
                     out_default: str | None = None) -> argparse.ArgumentParser:
    """A parser showing `doc` as is; with `recipe`, an optional RECIPE and repeatable --set; with
    `out` (or `out_required`, or a default folder), --out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if recipe:
        parser.add_argument("recipe", type=Path, nargs="?")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    if out or out_required or out_default:
        parser.add_argument("--out", type=Path, required=out_required,
                            default=Path(out_default) if out_default else None)
    return parser


def recipe_of(path: Path, overrides: Sequence[str] = ()) -> "hierclf.Recipe":
    """The recipe as `hierclf fit-coarse RECIPE --set …` reads it."""
    return hierclf.load_recipe(path, list(overrides))


def best_rates(works: dict[str, Callable[[], Any]], count: int, rounds: int = 3) -> dict[str, float]:
    """Items per second of each of `works` (each doing `count` items), the works run in turn
    `rounds` times so a busy moment of a shared machine hits them alike: each one's best round."""
    best = dict.fromkeys(works, 0.0)
    for _ in range(rounds):
        for name, work in works.items():
            started = time.perf_counter()
            work()
            best[name] = max(best[name], count / (time.perf_counter() - started))
    return best


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table, every cell as str() shows it."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fashion_parser(doc: str, out: str, train_limit: int, epochs: int, test_limit: int = 5000) -> argparse.ArgumentParser:
    """The Fashion-MNIST benchmarks' arguments: how many images, folds, epochs, which model."""
    parser = benchmark_parser(doc, out_default=out)
    parser.add_argument("--train-limit", type=int, default=train_limit)
    parser.add_argument("--test-limit", type=int, default=test_limit)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    return parser


def fashion_stage(args: argparse.Namespace) -> dict:
    """The [coarse] keys every Fashion-MNIST benchmark run starts from, so each trains the same way
    unless it says otherwise."""
    return {"model": args.model, "img_size": args.img_size, "in_chans": 1, "batch_size": 128, "lr": 3e-3,
            "weight_decay": 5e-4, "scheduler": "cosine", "warmup_epochs": 1, "epochs": args.epochs,
            "workers": args.workers}
