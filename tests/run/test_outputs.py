"""A run's out-of-fold outputs, aligned across stages."""
import numpy as np

from hierclf.run.files import read_npz
from hierclf.run.folder import Run
from hierclf.run.outputs import load_oof


def test_every_stages_outputs_line_up_on_the_same_rows(detail_runs):
    run = Run.open(detail_runs / "hier")
    oof = load_oof(run)
    coarse = read_npz(run.oof_path("coarse"))
    assert np.array_equal(oof.ids, coarse["ids"]) and list(oof.specialist_probs) == ["patch"]
    label_of = dict(zip(run.folds.ids, run.folds.labels))
    assert oof.labels.tolist() == [label_of[i] for i in oof.ids]
    assert oof.specialist_probs["patch"].shape == (len(oof.ids), 2)
