"""The linear probe's pieces: the pooled features a pretrained backbone gives its classifier, and
scikit-learn's logistic regression on them, returned as a linear layer the model can hold. Used
by `hierclf probe` (a whole control run) and by each fine-tuned fold's check against the probe."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from hierclf.models.factory import MultiHeadModel
from hierclf.models.inference import autocast


@torch.inference_mode()
def pooled_features(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                    amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """What a model's classifiers read for every row of `loader` (a timm model's pooled features,
    after timm's own head but its last layer: `forward_head(…, pre_logits=True)`; a multi-head
    model's shared backbone), and each row's index. In eval mode a timm model's classifier maps
    these to its logits."""
    model.eval()
    backbone = model.backbone if isinstance(model, MultiHeadModel) else model
    features, rows = [], []
    for images, _, row in loader:
        with autocast(device, amp):
            pooled = backbone.forward_head(backbone.forward_features(images.to(device, non_blocking=True)),
                                           pre_logits=True)
        features.append(pooled.float().cpu().numpy())
        rows.append(row.numpy())
    return np.concatenate(features), np.concatenate(rows)


PROBE_CS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
"""The regularisation strengths an automatic probe chooses from (on standardised features)."""


def fit_probe(features: np.ndarray, targets: np.ndarray, num_classes: int,
              c: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """scikit-learn's logistic regression on standardised features, returned as the weight
    (classes × features) and bias of one linear layer over the raw features, whose softmax is the
    regression's predict_proba, and the C it used. With `c` None, C is chosen from PROBE_CS by a
    stratified 3-fold cross-validation of the log-loss inside `targets`' rows, as a careful user
    would (on a few thousand rows of 1,000 features, C = 1 overfits). A class the training rows
    lack gets a bias far below the rest."""
    scaler = StandardScaler().fit(features)
    scaled = scaler.transform(features)
    folds = int(min(3, np.bincount(targets)[np.unique(targets)].min()))
    if c is None and folds >= 2:
        with warnings.catch_warnings():  # scikit-learn 1.9 announces new defaults that change nothing here
            warnings.filterwarnings("ignore", category=FutureWarning, module="sklearn")
            regression = LogisticRegressionCV(Cs=list(PROBE_CS), cv=folds, scoring="neg_log_loss",
                                              max_iter=2000).fit(scaled, targets)
        c = float(np.ravel(regression.C_)[0])  # one C per class before scikit-learn 1.10, one after
    else:
        c = 1.0 if c is None else c
        regression = LogisticRegression(C=c, max_iter=2000).fit(scaled, targets)
    coef, intercept = regression.coef_, regression.intercept_
    if len(regression.classes_) == 2:  # one logit for the second class against the first: as two
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight = np.zeros((num_classes, features.shape[1]))
    bias = np.full(num_classes, -30.0)
    weight[regression.classes_] = coef / scaler.scale_
    bias[regression.classes_] = intercept - (coef / scaler.scale_) @ scaler.mean_
    return weight.astype(np.float32), bias.astype(np.float32), c


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
