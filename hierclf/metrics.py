"""Scores, always over the full list of classes so a class absent from a fold still counts."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score


def scores(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 of label predictions."""
    labels = list(range(num_classes))
    return {"accuracy": float(accuracy_score(targets, predictions)),
            "macro_f1": float(f1_score(targets, predictions, labels=labels, average="macro", zero_division=0))}


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
