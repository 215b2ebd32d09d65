"""Train a fixed set of runs through the `hierclf` command, for `compare_runs.py` to compare file by
file between two versions of the code (a redesign must leave every output as it was):

- the demo's three runs on the digits: flat, hierarchical (product), over the flat run (blend);
- a run with attribute heads (synthetic images in the face-mask layout), temperature-calibrated,
  with a head specialist;
- a grouped run trained by torchrun with 2 gloo processes (both stages).

Each run is also predicted (with --probs and --trace) and evaluated. Whatever `hierclf` is
importable runs, so the same script serves the code before and after a change:

    PYTHONPATH=/path/to/old/checkout python benchmarks/reference_runs.py /tmp/ref && mv /tmp/ref/runs /tmp/ref/before
    python benchmarks/reference_runs.py /tmp/ref && mv /tmp/ref/runs /tmp/ref/after
    python benchmarks/compare_runs.py /tmp/ref/before /tmp/ref/after

Both sets are trained under the same absolute path (ROOT/runs), as recipes and reports hold it.
Every training is pinned to one thread, so the figures do not depend on the machine's load.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = HERE.parent / "recipes"
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import write_mask_dataset  # noqa: E402  the tests' face-mask layout: colour, form and size say the label
from harness import benchmark_parser
HEADS_RECIPE = """
[data]
mask_images = "{images}"

[folds]
count = 3
seed = 0

[hierarchy]
heads = {{ mask = ["wear", "incorrect", "not_wear"], gender = ["male", "female"], age = ["<30", "30-59", ">=60"] }}

[heads.age]
label_smoothing = 0.1

[coarse]
model = "test_resnet"
img_size = 32
epochs = 6
batch_size = 16
lr = 3e-3
workers = 0
device = "cpu"

[fine.age]
img_size = 40
epochs = 3

[combine]
method = "stacking"
calibrate = true
"""


def hierclf(*args: object, torchrun: int = 0) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(torchrun), "-m", "hierclf"] \
        if torchrun else [sys.executable, "-m", "hierclf"]
    command = launcher + [str(arg) for arg in args]
    print("$ hierclf", " ".join(str(arg) for arg in args), f"(torchrun, {torchrun} processes)" if torchrun else "",
          flush=True)
    subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"})


def predict_and_evaluate(run: Path, test: Path) -> None:
    hierclf("predict", run, test, "--out", run.parent / f"{run.name}-test.csv", "--probs", "--trace", "--workers", 0,
            "--device", "cpu")
    hierclf("evaluate", run)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("root", type=Path, help="ROOT/data (written once) and ROOT/runs (written anew)")
    root = parser.parse_args().root.resolve()
    data, runs = root / "data", root / "runs"
    if runs.exists():
        sys.exit(f"{runs} exists: move it away first")
    if not (data / "digits").exists():
        hierclf("dataset", "digits", data / "digits")
    if not (data / "mask").exists():
        write_mask_dataset(data / "mask", people_per_kind=3)
        people = write_mask_dataset(data / "mask-people", people_per_kind=1, seed=1)
        (data / "mask-test").mkdir()
        for path in sorted(people.glob("*/*.png")):  # a plain folder of unlabelled photos to predict
            path.rename(data / "mask-test" / f"{path.parent.name.split('_')[0]}-{path.name}")
    (data / "mask-heads.toml").write_text(HEADS_RECIPE.format(images=data / "mask" / "images"))
    digits_test = data / "digits" / "test.csv"
    runs.mkdir(parents=True)
    # the demo's recipes name ../data/digits and ../runs/digits: copies beside ROOT/data resolve to ours
    recipes = root / "recipes"
    recipes.mkdir(exist_ok=True)
    for name in ("digits", "digits-hierarchical", "digits-over-flat"):
        (recipes / f"{name}.toml").write_text((RECIPES / f"{name}.toml").read_text())
    cpu = ("--set", "coarse.device=cpu")

    hierclf("-q", "fit-coarse", recipes / "digits.toml", "--out", runs / "digits", *cpu)
    predict_and_evaluate(runs / "digits", digits_test)
    hierclf("-q", "fit-coarse", recipes / "digits-hierarchical.toml", "--out", runs / "digits-hierarchical", *cpu)
    hierclf("-q", "fit-fine", runs / "digits-hierarchical")
    hierclf("evaluate", runs / "digits-hierarchical", "--against", runs / "digits")
    hierclf("predict", runs / "digits-hierarchical", digits_test, "--out", runs / "digits-hierarchical" / "routed.csv",
            "--combiner", "routed", "--trace", "--probs", "--workers", 0, "--device", "cpu")
    predict_and_evaluate(runs / "digits-hierarchical", digits_test)
    hierclf("-q", "fit-coarse", recipes / "digits-over-flat.toml", "--out", runs / "digits-over-flat", *cpu)
    hierclf("-q", "fit-fine", runs / "digits-over-flat")
    predict_and_evaluate(runs / "digits-over-flat", digits_test)

    hierclf("-q", "fit-coarse", data / "mask-heads.toml", "--out", runs / "mask-heads")
    hierclf("-q", "fit-fine", runs / "mask-heads")
    predict_and_evaluate(runs / "mask-heads", data / "mask-test")

    small = ("--set", "coarse.epochs=4", "--set", "coarse.batch_size=32", *cpu)
    hierclf("-q", "fit-coarse", recipes / "digits-hierarchical.toml", "--out", runs / "digits-torchrun", *small,
            torchrun=2)
    hierclf("-q", "fit-fine", runs / "digits-torchrun", "--set", "fine.epochs=3", torchrun=2)
    predict_and_evaluate(runs / "digits-torchrun", digits_test)


if __name__ == "__main__":
    main()
