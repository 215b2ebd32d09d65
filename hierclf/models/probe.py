"""The linear probe's pieces: the pooled features a pretrained backbone gives its classifier, and
scikit-learn's logistic regression on them, returned as a linear layer the model can hold. Used
by `hierclf probe` (a whole control run), by each fine-tuned fold's check against the probe, and
by LP-FT (`head_init = "probe"`), whose heads start as the fold's probe (`BlockProbes`)."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from hierclf.errors import RecipeError
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.factory import MultiHeadModel, SeparateHeads
from hierclf.models.inference import autocast


@torch.inference_mode()
def pooled_features(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                    amp: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """What a model's classifiers read for every row of `loader` (a timm model's pooled features,
    after timm's own head but its last layer: `forward_head(…, pre_logits=True)`; a multi-head
    model's shared backbone), and each row's index. In eval mode a timm model's classifier maps
    these to its logits (a multi-head model's heads, dropout aside, too)."""
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


def probe_slots(model: torch.nn.Module, key: str = "coarse") -> list[tuple[torch.nn.Module, torch.nn.Linear]]:
    """Per output block, in the layout's order: the model whose pooled features its classifier
    reads (`pooled_features` takes it), and that classifier. A classifier that is no linear layer
    over pooled features cannot hold a probe, and is refused naming `key`."""
    if isinstance(model, SeparateHeads):
        slots = [(inner, inner.get_classifier()) for inner in model.models.values()]
    elif isinstance(model, MultiHeadModel):
        slots = [(model, head) for head in model.heads.values()]
    else:
        slots = [(model, model.get_classifier())]
    for _, classifier in slots:
        if not isinstance(classifier, torch.nn.Linear):
            raise RecipeError(f"{key}.model: its classifier is a {type(classifier).__name__}, not a linear layer over "
                              f"pooled features; a linear probe needs one")
    return slots


def block_features(model: torch.nn.Module, loader: DataLoader, device: torch.device,
                   amp: bool = True) -> tuple[list[np.ndarray], np.ndarray]:
    """Per output block, the pooled features its classifier reads for every row of `loader` (one
    pass per distinct backbone: a shared one is read once), and each row's index."""
    sources = [source for source, _ in probe_slots(model)]
    read = {id(source): pooled_features(source, loader, device, amp) for source in {id(s): s for s in sources}.values()}
    rows = next(iter(read.values()))[1]
    if any(not np.array_equal(order, rows) for _, order in read.values()):  # an unshuffled loader gives one order
        raise RuntimeError("the loader gave the rows in another order on a second pass")
    return [read[id(source)][0] for source in sources], rows


@dataclass(frozen=True)
class BlockProbes:
    """A fold's linear probe in its model's own layout: per output block (one for a flat model, one
    per attribute head), the regression on the features that block's classifier reads, as that
    classifier's weight and bias. Its probabilities are the model's, were it to hold them."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    @classmethod
    def fit(cls, features: list[np.ndarray], targets: np.ndarray, layout: OutputLayout) -> "BlockProbes":
        """Each block's regression on its features and its column of `targets` (N×H), C chosen by
        cross-validation inside these rows (`fit_probe`)."""
        fitted = [fit_probe(block, targets[:, column], spec.size)
                  for column, (block, spec) in enumerate(zip(features, layout.blocks))]
        return cls(tuple(weight for weight, _, _ in fitted), tuple(bias for _, bias, _ in fitted))

    def probs(self, features: list[np.ndarray]) -> np.ndarray:
        """The probabilities the probe gives these rows, its blocks side by side."""
        return np.concatenate([softmax(block @ weight.T + bias)
                               for block, weight, bias in zip(features, self.weights, self.biases)], axis=1)

    def load_into(self, model: torch.nn.Module) -> None:
        """Set every classifier of `model` to its block's regression."""
        with torch.no_grad():
            for (_, classifier), weight, bias in zip(probe_slots(model), self.weights, self.biases):
                classifier.weight.copy_(torch.from_numpy(weight))
                classifier.bias.copy_(torch.from_numpy(bias))


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
