"""The `hierclf` command: what it prints, and user errors that end in one line with exit code 2."""
import csv
import importlib.metadata
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import MASK_HEADS, cli, write_recipe
from hierclf.run.folder import Run


def test_console_script_and_module_entry_points():
    try:
        importlib.metadata.distribution("hierclf")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("hierclf is imported from a source tree here, not installed (make test installs it)")
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("hierclf") == "hierclf.cli:main"
    done = subprocess.run([sys.executable, "-m", "hierclf", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("fit-coarse", "fit-fine", "predict", "evaluate", "suggest-groups", "augment", "dataset"):
        assert command in done.stdout


def test_user_errors_exit_2_in_one_line_and_write_nothing(flat_run, tmp_path):
    root, recipe, train_csv, _ = flat_run
    seeds = root.parent / "seeds"
    rows = train_csv.read_text().splitlines()
    (tmp_path / "one.csv").write_text("\n".join([rows[0]] + [r for r in rows[1:] if r.endswith(",left")]) + "\n")
    one_class = write_recipe(tmp_path / "one.toml", {"csv": str(tmp_path / "one.csv"),
                                                     "images": str(train_csv.with_suffix(""))})
    cases = [
        (("predict", tmp_path, tmp_path, "--out", tmp_path / "p.csv"), "is not a hierclf run folder"),
        (("predict", root, tmp_path / "missing", "--out", tmp_path / "p.csv"), "does not exist"),
        (("predict", root, train_csv, "--out", tmp_path / "p.csv", "--tta", "hflip,spin"),
         "--tta: unknown TTA variant 'spin'"),
        (("predict", root, root, train_csv, "--out", tmp_path / "p.csv", "--weights", "1"),
         "--weights has 1 numbers for 2 runs"),
        *((("predict", root, root, train_csv, "--out", tmp_path / "p.csv", "--weights", given),
           f"--weights: expected finite numbers ≥ 0, not all 0; got {shown}")
          for given, shown in (("inf,1", "inf, 1"), ("nan,1", "nan, 1"), ("1e308,1e308", "1e+308, 1e+308"),
                               ("-1,2", "-1, 2"), ("0,0", "0, 0"))),
        (("predict", root, root, train_csv, "--out", tmp_path / "p.csv", "--trace"),
         "--trace follows one run's stages"),
        (("fit-coarse", recipe, "--out", root.parent / "data"), "that folder holds"),
        (("fit-coarse", one_class, "--out", tmp_path / "r"), "every row has the label 'left'; a classifier needs"),
        (("fit-coarse", recipe, "--out", tmp_path / "r", "--fold", "7"), "--fold 7: this run has folds 0..2"),
        (("fit-coarse", recipe, "--out", tmp_path / "r", "--set", "coarse.model=resnet_nope"),
         "timm has no such model"),
        (("fit-coarse", recipe, "--out", root, "--set", "coarse.epochs=2"),
         "made with another recipe (coarse.epochs: 10 → 2)"),
        (("fit-coarse", recipe, "--out", seeds, "--seeds", "1,1"), "--seeds '1,1': expected distinct whole numbers"),
        (("suggest-groups", tmp_path), "is not a hierclf run folder"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "p.csv").exists() and not seeds.exists()


def test_a_bad_recipe_key_is_one_line_naming_it(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\ncsv = "a.csv"\n[coarse]\nbatchsize = 8\n')
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "coarse.batchsize" in result.stderr and "batch_size" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_file_that_is_no_image_stops_the_run_before_anything_is_written(tmp_path, csv_dataset):
    (csv_dataset.parent / "train" / "middle-007.png").write_bytes(b"not a png at all")
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "middle-007.png cannot be decoded" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_an_image_cut_short_stops_the_run_before_anything_is_written(tmp_path, csv_dataset):
    """A truncated JPEG passes a header check; every image is decoded before the run folder is
    made, here in DataLoader worker processes, and the real process must still end in one line
    naming the file, exit 2, with nothing written."""
    images = csv_dataset.parent / "train"
    (images / "middle-007.png").unlink()
    noise = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(images / "middle-007.jpg", quality=95)
    whole = (images / "middle-007.jpg").read_bytes()
    (images / "middle-007.jpg").write_bytes(whole[: len(whole) * 6 // 10])
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)},
                          coarse={"epochs": 1, "workers": 2, "cache_mb": 0})  # checked by 2 loader workers
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "hierclf", "-q", "fit-coarse", str(recipe), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert "middle-007.jpg cannot be decoded" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's refusing unpickler, reading our fake file
def test_a_weights_file_that_cannot_load_writes_nothing_and_the_fixed_rerun_works(tmp_path, csv_dataset):
    (tmp_path / "evil.pth").write_bytes(b"\x80\x04\x95not a state dict")
    for bad, message in ((tmp_path / "missing.safetensors", "missing.safetensors does not exist"),
                         (tmp_path / "evil.pth", "evil.pth': cannot read weights")):
        recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)}, coarse={"weights": str(bad)})
        result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
        assert result.exit_code == 2 and message in result.stderr, result.output
        assert not (tmp_path / "run").exists()
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(csv_dataset)}, coarse={"epochs": 1})
    assert cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run").exit_code == 0


def test_suggest_groups_finds_the_detail_classes_from_the_flat_run(detail_runs):
    result = cli("suggest-groups", detail_runs / "flat")
    assert result.exit_code == 0, result.output
    assert 'groups = [["checked", "plain"]]' in result.stdout
    assert f'coarse_run = "{detail_runs / "flat"}"' in result.stdout
    line = next(line for line in result.stdout.splitlines() if "group 1:" in line)
    errors = int(result.stdout.split(" out-of-fold errors")[0])
    inside = int(line.split("of the errors (")[1].split(";")[0])
    assert 0 < inside <= errors and f"could win at most {inside / 160 * 100:.2f} points of accuracy" in line
    result = cli("suggest-groups", detail_runs / "hier")
    assert result.exit_code == 2 and "has groups patch; suggest-groups reads a flat run's" in result.stderr
    assert "attributes" not in result.stdout  # checked, plain, left, right are no attributes


def test_suggest_groups_says_heads_fit_labels_made_of_attributes(mask_runs):
    result = cli("suggest-groups", mask_runs / "flat", "--min-confusion", "0.01")
    assert result.exit_code == 0, result.output
    assert ("these 18 classes are every combination of 3 attributes ({wear, incorrect, not_wear} × {male, female} "
            "× {<30, 30-59, >=60}): one head per attribute fits such labels better than groups") in result.stdout
    # the one-epoch flat run confuses every class with every other: no group of all 18 is offered
    assert "every class is confused with the others, and a group of them all is the flat problem" in result.stdout
    groups = [line for line in result.stdout.splitlines() if line.startswith("  group ")]
    assert groups and all(line.split(": ", 1)[1].split("  holds")[0].count(", ") < 17 for line in groups)


def test_evaluate_names_every_file_it_wrote_the_page_to_open_first(detail_runs):
    result = cli("evaluate", detail_runs / "hier")
    assert result.exit_code == 0, result.output
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"wrote {detail_runs / 'hier'}/report.html (open it first), ")
    named = ["report.html"] + last.split("(open it first), ")[1].split(", ")
    assert {"report.md", "report.json", "oof-predictions.csv", "confusion.png", "reliability.png"} <= set(named)
    assert all((detail_runs / "hier" / name).is_file() for name in named)


def test_predict_traces_heads_and_scores_each(mask_runs, tmp_path):
    images = mask_runs / "data" / "images"
    chosen = sorted(images.iterdir())[::4]
    with (tmp_path / "input.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "mask", "gender", "age"])
        for person in chosen:
            gender, years = person.name.split("_")[1], int(person.name.split("_")[3])
            age = MASK_HEADS["age"][(years >= 30) + (years >= 60)]
            writer.writerow([f"{person.name}/mask1.png", "wear", gender, age])
            writer.writerow([f"{person.name}/normal.png", "not_wear", gender, age])
    result = cli("predict", mask_runs / "heads", tmp_path / "input.csv", "--images", images, "--out",
                 tmp_path / "p.csv", "--trace")
    assert result.exit_code == 0, result.output
    for name in MASK_HEADS:
        assert f"head {name}: macro-F1" in result.output
    with (tmp_path / "p.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(chosen)
    assert {"mask", "mask_confidence", "gender", "age", "age_by"} <= set(rows[0])
    assert {row["age_by"] for row in rows} == {"specialist"} and {row["mask_by"] for row in rows} == {"coarse"}
    assert all(row["label"] == f"{row['mask']}/{row['gender']}/{row['age']}" for row in rows)
    result = cli("predict", mask_runs / "heads", tmp_path / "input.csv", "--images", images, "--out",
                 tmp_path / "i.csv", "--index")
    assert result.exit_code == 0, result.output
    with (tmp_path / "i.csv").open() as handle:
        indices = [int(row["label"]) for row in csv.DictReader(handle)]
    assert [Run.open(mask_runs / "heads").hierarchy.class_names[i] for i in indices] == [row["label"] for row in rows]


def test_fit_fine_prints_each_heads_report(mask_runs):
    result = cli("fit-fine", mask_runs / "heads")  # every fold is trained: it only gathers and prints
    assert result.exit_code == 0, result.output
    assert "specialist 'age' out-of-fold" in result.stdout and "30-59" in result.stdout
    result = cli("fit-coarse", mask_runs / "heads.toml", "--out", mask_runs / "heads")
    assert "(the joint class: every head right)" in result.stdout and "head 'gender': macro-F1" in result.stdout


def unwritable(folder):
    """Make `folder` refuse new files (permission bits, or for root an immutable attribute), and
    the function that undoes it; skip where neither works on this machine."""
    import os
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    probe = folder / "probe"
    try:
        probe.touch()
    except OSError:
        return lambda: folder.chmod(0o755)
    probe.unlink()
    folder.chmod(0o755)
    if os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    pytest.skip("cannot make a folder unwritable here (root without chattr)")


def test_outputs_that_cannot_be_written_are_refused_before_any_work(flat_run, tmp_path):
    run, recipe, train_csv, _ = flat_run
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "a-folder").mkdir()
    cases = [
        (("predict", run, train_csv, "--out", tmp_path / "a-folder"), "--out .*a-folder: that is a folder"),
        (("predict", run, train_csv, "--out", tmp_path / "a-file" / "p.csv"), "a-file is a file, so nothing"),
        (("fit-coarse", recipe, "--out", tmp_path / "a-file"), "--out .*a-file: that is a file; give a folder"),
        (("fit-coarse", recipe, "--out", tmp_path / "a-file" / "run"), "a-file is a file, so nothing"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2 and re.search(message, result.stderr), (args, result.output)
        assert "Traceback" not in result.output
    locked = tmp_path / "locked"
    undo = unwritable(locked)
    try:
        for args in (("predict", run, train_csv, "--out", locked / "p.csv"),
                     ("fit-coarse", recipe, "--out", locked / "run")):
            result = cli(*args)
            assert result.exit_code == 2 and f"cannot write in {locked}" in result.stderr, result.output
    finally:
        undo()
    assert list(locked.iterdir()) == []
    import shutil

    shutil.copytree(run, tmp_path / "copy")
    undo = unwritable(tmp_path / "copy")  # a rerun into a run folder that cannot be written
    try:
        for args in (("evaluate", tmp_path / "copy"), ("fit-coarse", recipe, "--out", tmp_path / "copy")):
            result = cli(*args)
            assert result.exit_code == 2 and f"cannot write in {tmp_path / 'copy'}" in result.stderr, result.output
    finally:
        undo()


def test_a_decompression_bomb_ends_clean_in_training_and_in_predict(flat_run, tmp_path, monkeypatch):
    from PIL import Image

    from conftest import write_csv_dataset, write_recipe

    train_csv = write_csv_dataset(tmp_path / "data", per_class=4)
    Image.new("L", (120, 100)).save(tmp_path / "data" / "train" / "left-001.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 12,000 pixels: a bomb at this limit
    recipe = write_recipe(tmp_path / "r.toml", {"csv": str(train_csv)}, coarse={"epochs": 1})
    result = cli("fit-coarse", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2 and "left-001.png is too large to decode safely" in result.stderr, result.output
    assert not (tmp_path / "run").exists()
    result = cli("predict", flat_run[0], train_csv, "--out", tmp_path / "p.csv", "--workers", "2")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("hierclf: error: image ") and "too large to decode safely" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("args", [
    ("tune-fine", "RUN", "--group", "g", "--try", "epochs=1", "--budget"),
    ("suggest-groups", "RUN", "--min-confusion"),
    ("probe", "RUN", "--out", "P", "--c"),
])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_every_numeric_option_refuses_nan_and_infinity(args, value):
    """click's own ranges let NaN through (each comparison with it is false): a budget of NaN was
    never over budget."""
    result = cli(*args, value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{value} is not a finite number" in result.output or "is not in the range" in result.output, result.output


def test_the_library_refuses_a_budget_that_is_not_a_finite_positive_number():
    from hierclf.errors import HierclfError
    from hierclf.tune.specialist import Search

    for budget in (float("nan"), float("inf"), 0.0, -1.0):
        with pytest.raises(HierclfError, match=f"budget {budget}: expected a finite number > 0"):
            Search(budget=budget)


@pytest.mark.parametrize("control", ["", ",", " , "])
def test_an_empty_control_is_refused_in_one_line(detail_runs, control):
    """`--control "$UNSET"` (an empty shell variable) names the option, not a numpy traceback."""
    result = cli("evaluate", detail_runs / "hier", "--control", control)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "--control" in result.stderr, result.output


@pytest.mark.parametrize("error", [RuntimeError("could not create a primitive"), MemoryError(),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:119] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 2147483648 bytes.")])
def test_memory_running_out_is_one_line_and_other_failures_are_not_hidden(tiny_recipe, tmp_path, monkeypatch, error):
    """oneDNN under an address-space limit cannot create a primitive; torch's allocator says it
    cannot allocate: one line saying memory ran out and what to lower, exit 2. Any other
    RuntimeError is a bug and keeps its traceback."""
    import hierclf.train.stage as stage

    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(stage, "train_fold", fails)
    result = cli("-q", "fit-coarse", tiny_recipe, "--out", tmp_path / "run", "--fold", "0")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith("hierclf: error: memory ran out (") and "lower batch_size" in result.stderr
    monkeypatch.setattr(stage, "train_fold", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli("-q", "fit-coarse", tiny_recipe, "--out", tmp_path / "again", "--fold", "0")


def test_the_command_line_starts_and_refuses_a_recipe_without_torch(tmp_path):
    """`hierclf --help`, every command's --help and a recipe's mistakes need no torch (importing
    it takes seconds and hundreds of MB): a fresh interpreter runs them and never imports it."""
    import subprocess
    import sys

    recipe = tmp_path / "r.toml"
    recipe.write_text('[coarse]\nmodle = "resnet18"\n')
    script = f"""
import sys
from click.testing import CliRunner
from hierclf.cli import main
runner = CliRunner()
results = [runner.invoke(main, ["--help"])]
results += [runner.invoke(main, [name, "--help"]) for name in main.commands]
results += [runner.invoke(main, [command, {str(recipe)!r}, "--out", {str(tmp_path / "out")!r}, *extra])
            for command, extra in (("fit-coarse", []), ("probe", []), ("augment", ["--copies", "1"]))]
print([result.exit_code for result in results])
print([line for result in results[-3:] for line in result.output.splitlines() if "modle" in line])
print(sorted(name for name in ("torch", "timm", "albumentations", "sklearn", "cv2") if name in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    codes, refusals, heavy = done.stdout.strip().splitlines()[-3:]
    assert set(eval(codes)[:-3]) == {0} and eval(codes)[-3:] == [2, 2, 2], done.stdout + done.stderr
    assert len(eval(refusals)) == 3 and all("did you mean 'model'" in line for line in eval(refusals)), refusals
    assert eval(heavy) == [], heavy
