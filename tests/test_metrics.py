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


def test_calibration_error_and_log_likelihood_by_their_standard_definitions():
    from hierclf.metrics import calibration

    # four rows: confidences 0.9, 0.9 (one right, one wrong), 0.6 (right), 0.35 of three classes (wrong)
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.35, 0.33, 0.32]])
    targets = np.array([0, 1, 1, 2])
    # bins of width 1/15: 0.9 → (0.8667, 0.9333], 0.6 → (0.5333, 0.6], 0.35 → (0.3333, 0.4]
    expected_ece = 2 / 4 * abs(0.5 - 0.9) + 1 / 4 * abs(1.0 - 0.6) + 1 / 4 * abs(0.0 - 0.35)
    expected_nll = -np.mean(np.log([0.9, 0.05, 0.6, 0.32]))
    result = calibration(targets, probs)
    assert result["ece"] == pytest.approx(expected_ece) and result["nll"] == pytest.approx(expected_nll)
    perfect = calibration(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert perfect["ece"] == 0.0 and perfect["nll"] == pytest.approx(0.0)


def test_a_paired_bootstrap_says_when_a_difference_is_within_the_noise():
    from sklearn.metrics import f1_score

    from hierclf.metrics import paired_difference

    rng = np.random.default_rng(0)
    targets = rng.integers(0, 5, 4000)

    def predict(right: float) -> np.ndarray:
        return np.where(rng.random(len(targets)) < right, targets, rng.integers(0, 5, len(targets)))

    better, worse = predict(0.9), predict(0.8)
    result = paired_difference(targets, better, worse, 5, seed=3)
    expected = (f1_score(targets, better, labels=range(5), average="macro")
                - f1_score(targets, worse, labels=range(5), average="macro"))
    assert result["difference"] == pytest.approx(expected, abs=1e-12)
    assert 0 < result["low"] < expected < result["high"]  # ten points on 4,000 rows: well outside the noise
    assert result == paired_difference(targets, better, worse, 5, seed=3)  # seeded
    twin = better.copy()  # another model as good: right on 40 rows `better` gets wrong, wrong on 40 others
    mended = rng.choice(np.flatnonzero(better != targets), 40, replace=False)
    broken = rng.choice(np.flatnonzero(better == targets), 40, replace=False)
    twin[mended], twin[broken] = targets[mended], (targets[broken] + 1) % 5
    close = paired_difference(targets, twin, better, 5)
    assert close["low"] < 0 < close["high"]  # their difference is within the noise of these rows
    assert paired_difference(targets, better, better, 5) == {"difference": 0.0, "low": 0.0, "high": 0.0,
                                                              "rounds": 1000}
