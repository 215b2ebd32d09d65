"""A run's temperature scaling: fit on each stage's out-of-fold outputs, checked, applied."""
import json
import re
import shutil

import numpy as np
import pytest

from conftest import cli
from hierclf.combine.temperature import fit_temperature, scaled
from hierclf.data import load_input_items
from hierclf.errors import RunError
from hierclf.run.files import read_npz
from hierclf.predict.pipeline import Inference, predict_items
from hierclf.run.folder import Run


def test_a_calibrated_run_fits_temperatures_on_its_out_of_fold_outputs_and_predict_applies_them(flat_run, tmp_path):
    run_dir, recipe, train_csv, _ = flat_run
    shutil.copytree(run_dir, tmp_path / "run")
    result = cli("-q", "fit-coarse", recipe, "--out", tmp_path / "run", "--set", "combine.calibrate=true")
    assert result.exit_code == 0, result.output  # every fold kept: only the calibration is fit
    run = Run.open(tmp_path / "run")
    saved = json.loads(run.calibration_path.read_text())
    oof = read_npz(run.oof_path("coarse"))
    expected = fit_temperature(oof["probs"], oof["targets"])
    assert saved["coarse"]["temperatures"] == [pytest.approx(expected)]
    items = load_input_items(train_csv, run.hierarchy.class_names)
    plain = predict_items(run_dir, items, inference=Inference(workers=0, device="cpu"))
    calibrated = predict_items(run, items, inference=Inference(workers=0, device="cpu"))
    assert np.allclose(calibrated.probs, scaled(plain.probs, expected), atol=1e-5)
    assert np.array_equal(calibrated.labels, plain.labels)
    report = cli("evaluate", tmp_path / "run")
    assert report.exit_code == 0 and "Temperature scaling" in (tmp_path / "run" / "report.md").read_text()
    entry = json.loads((tmp_path / "run" / "report.json").read_text())["calibration"]["coarse"]
    block = next(iter(entry.values()))
    assert block["after"]["nll"] <= block["before"]["nll"] + 1e-9
    # out-of-fold outputs changed since: the temperatures are refused until refit
    np.savez(run.oof_path("coarse"), **{**oof, "probs": oof["probs"][::-1].copy()})
    with pytest.raises(RunError, match="the calibration of stage coarse was fit on other out-of-fold outputs"):
        predict_items(Run.open(tmp_path / "run"), items, inference=Inference(workers=0, device="cpu"))


@pytest.mark.parametrize("temperatures, message", [
    ([0], r"coarse.temperatures\[0\] is 0, expected >= 0.05"), ([-1.0], r"is -1.0, expected >= 0.05"),
    (["NaN"], "is nan, not a finite number"), (["Infinity"], "is inf, not a finite number"),
    (["two"], "is 'two', not a finite number"), ([1.0, 1.0], "holds 2 values, expected 1"),
    ("1.0", "is '1.0', not a list"), (None, "is None, not a list")])
def test_a_damaged_temperature_is_refused_in_one_line_never_nan(flat_run, tmp_path, temperatures, message):
    run_dir, recipe, train_csv, _ = flat_run
    if not (tmp_path.parent / "calibrated").exists():  # one calibrated copy for every case
        shutil.copytree(run_dir, tmp_path.parent / "calibrated")
        assert cli("-q", "fit-coarse", recipe, "--out", tmp_path.parent / "calibrated", "--set",
                   "combine.calibrate=true").exit_code == 0
    shutil.copytree(tmp_path.parent / "calibrated", tmp_path / "run")
    path = tmp_path / "run" / "calibration.json"
    saved = json.loads(path.read_text())
    text = json.dumps({**saved, "coarse": {**saved["coarse"], "temperatures": "@"}})
    value = json.dumps(temperatures).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    path.write_text(text.replace('"@"', value))
    result = cli("predict", tmp_path / "run", train_csv, "--out", tmp_path / "p.csv")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert re.search(f"calibration.json: .*{message}.*; delete it and run `hierclf fit-fine", result.stderr), result.stderr
    assert not (tmp_path / "p.csv").exists()
