"""Scores of labels (scikit-learn's), always over the full list of classes so a class absent from a fold
still counts. How a model's output becomes labels is the layout's (`hierclf.hierarchy.layout`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def scores(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of label predictions.

    Args:
        targets, predictions: class indices, one per row.
        num_classes: every class counts in the macro mean, present or not.

    Returns:
        {"accuracy": …, "macro_f1": …}."""
    labels = list(range(num_classes))
    return {"accuracy": float(accuracy_score(targets, predictions)),
            "macro_f1": float(f1_score(targets, predictions, labels=labels, average="macro", zero_division=0))}


def paired_difference(targets: np.ndarray, first: np.ndarray, second: np.ndarray, num_classes: int,
                      rounds: int = 1000, seed: int = 0) -> dict[str, float]:
    """The macro-F1 of `first`'s labels minus `second`'s on the same rows, with a 95 % interval
    from a paired bootstrap over rows: each round draws the rows with replacement and scores both
    predictions on the same draw, so what the two share (the hard rows) cancels out. An interval
    that holds 0 says the difference is within the noise of these rows.

    Args:
        targets: the rows' true classes.
        first, second: two predictions of the same rows (class indices).
        num_classes: the classes macro-F1 averages over (a class absent from a draw scores 0,
            as scikit-learn's macro-F1 over a full label list does).
        rounds: bootstrap draws.
        seed: their seed.

    Returns:
        {"difference", "low", "high", "rounds"}: the difference on the rows as they are, and the
        2.5th and 97.5th percentiles of the bootstrapped differences."""
    targets, first, second = (np.asarray(values, dtype=np.int64) for values in (targets, first, second))
    rng, rows = np.random.default_rng(seed), len(targets)
    chunk = max(1, 4_000_000 // rows)  # draws at a time: about 32 MB of counts, whatever the rows
    differences = []
    for start in range(0, rounds, chunk):
        counts = rng.multinomial(rows, np.full(rows, 1 / rows), size=min(chunk, rounds - start)).astype(np.float64)
        differences.append(_macro_f1(counts, targets, first, num_classes)
                           - _macro_f1(counts, targets, second, num_classes))
    differences = np.concatenate(differences)
    whole = np.ones((1, len(targets)))
    difference = float((_macro_f1(whole, targets, first, num_classes)
                        - _macro_f1(whole, targets, second, num_classes))[0])
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"difference": difference, "low": float(low), "high": float(high), "rounds": int(rounds)}


def _macro_f1(weights: np.ndarray, targets: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Macro-F1 of `predicted` under each row of `weights` (how often each row is drawn): per class
    2·tp / (2·tp + fp + fn), 0 where a class is neither true nor predicted."""
    classes = np.arange(num_classes)
    true, said = targets[:, None] == classes, predicted[:, None] == classes
    tp, fp, fn = weights @ (true & said), weights @ (~true & said), weights @ (true & ~said)
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return f1.mean(1)


def reliability(targets: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Rows binned by their top probability into `bins` equal widths of (0, 1]: each bin's row
    count, accuracy and mean confidence (0 where a bin is empty)."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(1)
    correct = (probs.argmax(1) == np.asarray(targets)).astype(np.float64)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # (k/bins, (k+1)/bins] → k
    counts = np.bincount(which, minlength=bins).astype(np.float64)
    shown = np.maximum(counts, 1)
    return {"counts": counts, "accuracy": np.bincount(which, correct, minlength=bins) / shown,
            "confidence": np.bincount(which, confidence, minlength=bins) / shown}


def calibration(targets: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict[str, float]:
    """How far probabilities are from frequencies: the expected calibration error (the
    row-weighted mean, over `reliability`'s bins, of |accuracy − mean confidence|) and the
    negative log-likelihood of the true class."""
    binned = reliability(targets, probs, bins)
    ece = float((binned["counts"] * np.abs(binned["accuracy"] - binned["confidence"])).sum() / len(targets))
    probs = np.asarray(probs, dtype=np.float64)
    nll = -np.log(np.clip(probs[np.arange(len(targets)), np.asarray(targets)], 1e-15, 1.0)).mean()
    return {"ece": ece, "nll": float(nll)}


def report_text(targets: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> str:
    """Per-class precision, recall and F1, as scikit-learn prints them."""
    return classification_report(targets, predictions, labels=list(range(len(class_names))),
                                 target_names=list(class_names), digits=4, zero_division=0)


def confusion(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    return confusion_matrix(targets, predictions, labels=list(range(num_classes)))


def per_class(targets: np.ndarray, predictions: np.ndarray, class_names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every class, by name."""
    report = classification_report(targets, predictions, labels=list(range(len(class_names))),
                                   target_names=list(class_names), output_dict=True, zero_division=0)
    return {name: {key: float(value) for key, value in report[name].items()} for name in class_names}


def most_confused(matrix: np.ndarray, class_names: Sequence[str], top: int = 5) -> list[dict[str, object]]:
    """The largest off-diagonal cells: which true class is taken for which, how often, and what
    share of all errors that is."""
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    total = errors.sum()
    pairs = []
    for flat in np.argsort(errors, axis=None)[::-1][:top]:
        true, predicted = np.unravel_index(flat, errors.shape)
        if errors[true, predicted] == 0:
            break
        pairs.append({"true": class_names[true], "predicted": class_names[predicted],
                      "count": int(errors[true, predicted]), "share_of_errors": float(errors[true, predicted] / total)})
    return pairs


def bias_variance(train: float, validation: float, gap: float = 0.05, fitted: float = 0.9) -> str:
    """One line on what the gap between a model's training and validation scores suggests.

    A training score well above validation is variance (the model learns its own rows by
    heart); a low training score is bias (it cannot fit even them). `gap` and `fitted` are
    the thresholds, in macro-F1 points."""
    head = f"train macro-F1 {train:.4f} vs validation {validation:.4f} (gap {train - validation:+.4f}): "
    overfits, underfits = train - validation > gap, train < fitted
    if overfits and underfits:
        return head + ("both bias and variance: it neither fits its training rows nor carries what it fits "
                       "over; first a bigger model or longer training, then regularisation")
    if overfits:
        return head + ("variance: it fits its training rows far better than new ones; more regularisation or "
                       "augmentation (augment, mixup_alpha, cutmix_alpha, drop_rate, weight_decay, "
                       "label_smoothing) or more data")
    if underfits:
        return head + ("bias: it does not fit even its training rows; a bigger model (model), a larger "
                       "img_size or longer training (epochs, lr)")
    return head + "neither high bias nor high variance; gains now come from data, ensembles or the hierarchy"
