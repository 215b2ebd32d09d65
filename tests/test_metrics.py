"""Scores over the full list of classes, the most-confused pairs, the bias/variance line."""
import numpy as np
import pytest

from hierclf.metrics import bias_variance, confusion, most_confused, per_class, report_text, scores


def test_a_class_absent_from_the_rows_still_counts_in_macro_f1():
    targets, predicted = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    assert scores(targets, predicted, 2)["macro_f1"] == 1.0
    assert scores(targets, predicted, 3)["macro_f1"] == pytest.approx(2 / 3)  # class 2 never seen: F1 0
    assert confusion(targets, predicted, 3).shape == (3, 3)
    assert set(per_class(targets, predicted, ("a", "b", "c"))) == {"a", "b", "c"}
    assert "c" in report_text(targets, predicted, ("a", "b", "c"))


def test_most_confused_pairs_and_their_share_of_errors():
    matrix = np.array([[10, 3, 0], [1, 8, 0], [0, 0, 5]])
    pairs = most_confused(matrix, ("a", "b", "c"))
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("a", "b", 3), ("b", "a", 1)]
    assert pairs[0]["share_of_errors"] == pytest.approx(0.75)


def test_the_bias_variance_line_reads_each_regime():
    assert "variance:" in bias_variance(1.0, 0.8)
    assert "bias:" in bias_variance(0.7, 0.7)
    assert "both bias and variance" in bias_variance(0.85, 0.6)
    assert "neither" in bias_variance(0.98, 0.96)
