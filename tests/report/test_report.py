"""`Report`'s verdicts: what a user reads first after evaluate."""
import numpy as np

from hierclf.report.report import Report


def report_with(against_coarse, pipelines):
    rows = np.arange(4)
    return Report(run="r", classes=["a", "b"], section=None, pipelines=pipelines, chosen="product", ids=rows,
                  labels=rows % 2, folds=rows % 2, against_coarse=against_coarse, part_noun="head")


def test_a_specialist_below_the_coarse_stage_is_named_and_the_coarse_pipeline_given():
    pipelines = {"product": {"macro_f1": 0.70, "training": {"images": 2.0}},
                 "coarse": {"macro_f1": 0.74, "training": {"images": 1.0}}}
    age = {"part": "age", "rows": 300, "specialist": 0.626, "coarse": 0.681,
           "paired_difference": {"low": -0.08, "high": -0.03}}
    mask = {"part": "mask", "rows": 300, "specialist": 0.95, "coarse": 0.90, "paired_difference": None}
    assert report_with([age, mask], pipelines).verdict == [
        "the specialist of head age lowers it: macro-F1 0.6260 against the coarse stage's 0.6810 on its 300 rows "
        "(-5.50 points; 95% interval -8.00 to -3.00); the coarse stage alone scores 0.7400 (combiner coarse)"]
    assert report_with([mask], pipelines).verdict == []  # a specialist that helps is not a verdict
