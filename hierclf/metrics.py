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
