"""The combiners that learn, fit once on a run's out-of-fold outputs and refused when stale."""
import json
import shutil

import numpy as np
import pytest

from hierclf.combine.blend import Blend
from hierclf.combine.stacking import Stacking
from hierclf.errors import RunError
from hierclf.run.files import read_npz, write_npz
from hierclf.run.fitted import fit_combiners, load_combiner
from hierclf.run.folder import Run
from hierclf.run.outputs import load_oof


def test_the_stacking_combiner_is_fit_when_the_specialists_finish(detail_runs):
    run = Run.open(detail_runs / "hier")
    saved = json.loads(run.combiner_path.read_text())
    assert list(saved) == ["stacking"] and "pickle" not in run.combiner_path.read_text()
    oof = load_oof(run)
    expected = Stacking(run.recipe.combine.stacking_c).fit(run.hierarchy, oof.outputs)
    loaded = load_combiner(run, "stacking")
    features = np.log(np.clip(np.concatenate([oof.coarse_probs, oof.specialist_probs["patch"]], 1), 1e-7, 1))
    assert np.allclose(loaded.predict_proba(features), expected.predict_proba(features))


def test_a_combiner_fit_on_other_outputs_is_refused_until_refit(detail_runs, tmp_path):
    shutil.copytree(detail_runs / "hier", tmp_path / "run")
    run = Run.open(tmp_path / "run")
    oof = read_npz(run.oof_path("fine/patch"))
    write_npz(run.oof_path("fine/patch"), **{**oof, "probs": oof["probs"][:, ::-1].copy()})  # a retrained stage
    with pytest.raises(RunError, match="the stacking combiner was fit on other out-of-fold outputs or settings; "
                                       "run `hierclf fit-fine"):
        load_combiner(run, "stacking")
    assert fit_combiners(run) == ["stacking"]
    assert load_combiner(run, "stacking").coef is not None
    run.combiner_path.unlink()
    with pytest.raises(RunError, match="the stacking combiner is not fit yet"):
        load_combiner(run, "stacking")
    assert load_combiner(run, "product").name == "product"  # nothing to fit: always ready


def test_nothing_is_fit_before_every_stage_has_its_outputs(flat_run, detail_runs, tmp_path):
    assert fit_combiners(Run.open(flat_run[0])) == []  # a flat run has no combiner that learns
    shutil.copytree(detail_runs / "hier", tmp_path / "run")
    run = Run.open(tmp_path / "run")
    run.combiner_path.unlink()
    run.oof_path("fine/patch").unlink()
    assert fit_combiners(run) == [] and not run.combiner_path.exists()


def test_the_blend_weight_is_fit_on_the_out_of_fold_outputs_alone(detail_runs, tmp_path):
    run = Run.open(detail_runs / "linked")
    saved = json.loads(run.combiner_path.read_text())
    assert set(saved) == {"stacking", "blend"}
    expected = Blend().fit(run.hierarchy, load_oof(run).outputs).weights
    assert saved["blend"]["state"]["weights"] == expected and 0.0 <= expected["patch"] <= 1.0
    assert load_combiner(run, "blend").weights == expected
    # other out-of-fold outputs (the specialist's, here reversed within the group) give another weight
    shutil.copytree(detail_runs / "linked", tmp_path / "linked")
    copy = Run.open(tmp_path / "linked")
    oof = read_npz(copy.oof_path("fine/patch"))
    write_npz(copy.oof_path("fine/patch"), **{**oof, "probs": oof["probs"][:, ::-1].copy()})
    with pytest.raises(RunError, match="the blend combiner was fit on other out-of-fold outputs"):
        load_combiner(copy, "blend")
    fit_combiners(copy)
    assert load_combiner(copy, "blend").weights == {"patch": 1.0}  # a specialist that is always wrong: none
