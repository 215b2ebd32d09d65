"""Compare two run folders file by file: the same out-of-fold and validation outputs (to rounding),
the same summaries, model descriptions, reports and prediction CSVs, every epoch's figures but its
seconds, and weights bit for bit. Used to show that a change to the code left what a recipe
learns unchanged (`reference_runs.py` trains a set of runs for it):

    python benchmarks/compare_runs.py runs-before/digits runs-after/digits
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from harness import benchmark_parser

TOLERANCE = 1e-5


def compare_npz(before: Path, after: Path) -> list[str]:
    old, new = np.load(before, allow_pickle=False), np.load(after, allow_pickle=False)
    problems = []
    if sorted(old.files) != sorted(new.files):
        return [f"arrays {sorted(old.files)} → {sorted(new.files)}"]
    for name in old.files:
        a, b = old[name], new[name]
        if a.shape != b.shape or a.dtype.kind != b.dtype.kind:
            problems.append(f"{name}: {a.dtype}{a.shape} → {b.dtype}{b.shape}")
        elif a.dtype.kind == "f":
            gap = float(np.abs(a - b).max()) if a.size else 0.0
            if gap > TOLERANCE:
                problems.append(f"{name}: differs by up to {gap:.2e}")
        elif not np.array_equal(a, b):
            problems.append(f"{name}: differs")
    return problems


def compare_json(before: Path, after: Path) -> list[str]:
    return _compare_values(json.loads(before.read_text()), json.loads(after.read_text()))


def _compare_values(before, after) -> list[str]:
    """Every leaf of two JSON values, floats to TOLERANCE; keys naming seconds are left out."""
    def numbers(value, path=""):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in numbers(item, f"{path}.{key}").items()}
        if isinstance(value, list):
            return {k: v for index, item in enumerate(value) for k, v in numbers(item, f"{path}[{index}]").items()}
        return {path: value}
    old, new = numbers(before), numbers(after)
    problems = [f"{key}: only before" for key in old.keys() - new.keys()]
    problems += [f"{key}: only after" for key in new.keys() - old.keys()]
    for key in old.keys() & new.keys():
        a, b = old[key], new[key]
        if "seconds" in key:
            continue
        if isinstance(a, float) and isinstance(b, float) and abs(a - b) <= TOLERANCE:
            continue
        if a != b:
            problems.append(f"{key}: {a!r} → {b!r}")
    return problems


def compare_csv(before: Path, after: Path) -> list[str]:
    old, new = list(csv.reader(before.open())), list(csv.reader(after.open()))
    if len(old) != len(new) or old[:1] != new[:1]:
        return [f"{len(old)} rows, header {old[:1]} → {len(new)} rows, header {new[:1]}"]
    problems = []
    for row, (a, b) in enumerate(zip(old, new)):
        for x, y in zip(a, b):
            try:
                same = abs(float(x) - float(y)) <= TOLERANCE
            except ValueError:
                same = x == y
            if not same:
                problems.append(f"row {row}: {x!r} → {y!r}")
                break
    return problems[:5]


def compare_weights(before: Path, after: Path) -> list[str]:
    """Bit for bit: the same tensor names, dtypes, shapes and bytes."""
    from safetensors.numpy import load_file

    old, new = load_file(str(before)), load_file(str(after))
    if sorted(old) != sorted(new):
        return [f"tensors {sorted(old)[:3]}… → {sorted(new)[:3]}…"]
    return [f"{name}: not bit-identical" for name in sorted(old)
            if old[name].dtype != new[name].dtype or old[name].shape != new[name].shape
            or old[name].tobytes() != new[name].tobytes()][:5]


def compare_jsonl(before: Path, after: Path) -> list[str]:
    """One JSON object per line (an epoch's figures), compared as `compare_json` does."""
    old, new = before.read_text().splitlines(), after.read_text().splitlines()
    if len(old) != len(new):
        return [f"{len(old)} lines → {len(new)} lines"]
    problems = []
    for number, (a, b) in enumerate(zip(old, new), start=1):
        problems += [f"line {number}: {problem}" for problem in _compare_values(json.loads(a), json.loads(b))]
    return problems


COMPARERS = {".npz": compare_npz, ".json": compare_json, ".jsonl": compare_jsonl, ".csv": compare_csv,
             ".safetensors": compare_weights}


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    different = 0
    for old in sorted(args.before.rglob("*")):
        compare = COMPARERS.get(old.suffix)
        if not old.is_file() or compare is None:
            continue
        relative = old.relative_to(args.before)
        new = args.after / relative
        problems = compare(old, new) if new.exists() else ["missing after"]
        print(f"{'same' if not problems else 'DIFFERENT'}  {relative}")
        for problem in problems[:8]:
            print(f"      {problem}")
        different += bool(problems)
    print(f"\n{different} file(s) differ")
    sys.exit(1 if different else 0)


if __name__ == "__main__":
    main()
