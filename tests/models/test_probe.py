"""The linear probe's maths: scikit-learn's logistic regression as one linear layer."""
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from hierclf.models.probe import PROBE_CS, fit_probe


def test_two_classes_are_one_logit_against_the_other():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(60, 5))
    targets = (features[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(int)
    weight, bias, _ = fit_probe(features, targets, 2, 1.0)
    scaler = StandardScaler().fit(features)
    expected = LogisticRegression(max_iter=2000).fit(scaler.transform(features), targets)
    logits = features @ weight.T + bias
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, expected.predict_proba(scaler.transform(features)), atol=1e-5)


def test_a_class_missing_from_the_training_rows_is_never_predicted():
    rng = np.random.default_rng(1)
    features, targets = rng.normal(size=(40, 4)), rng.integers(0, 2, 40) * 2  # classes 0 and 2 of 3
    weight, bias, _ = fit_probe(features, targets, 3, 1.0)
    assert (np.argmax(features @ weight.T + bias, 1) != 1).all() and bias[1] < bias[[0, 2]].min() - 20


def test_by_default_each_fold_chooses_c_by_cross_validation():
    """With many features and few rows C = 1 overfits; the probe chooses as LogisticRegressionCV does."""
    rng = np.random.default_rng(2)
    features = rng.normal(size=(90, 200))
    targets = np.repeat(np.arange(3), 30)
    features[:, :3] += 0.8 * np.eye(3)[targets]
    with warnings.catch_warnings():  # a user's fit prints no library's announcements
        warnings.simplefilter("error")
        weight, bias, chosen = fit_probe(features, targets, 3)
    scaled = StandardScaler().fit_transform(features)
    expected = LogisticRegressionCV(Cs=list(PROBE_CS), cv=3, scoring="neg_log_loss", max_iter=2000).fit(scaled, targets)
    assert chosen == np.ravel(expected.C_)[0] < 1.0
    logits = features @ weight.T + bias
    probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), expected.predict_proba(scaled), atol=1e-5)


def test_a_probe_per_output_block_is_what_each_head_would_hold():
    """Heads on one backbone and one model per head: each block's regression on the features its
    classifier reads, loaded into that classifier, gives the model's own probabilities."""
    import torch

    from hierclf.hierarchy.layout import OutputLayout
    from hierclf.models.factory import create_model
    from hierclf.models.probe import BlockProbes, probe_slots
    from hierclf.recipe.schema import StageConfig

    layout = OutputLayout.of_heads([("a", ("0", "1")), ("b", ("0", "1", "2"))])
    rng = np.random.default_rng(3)
    targets = np.stack([np.arange(60) % 2, np.arange(60) % 3], axis=1)
    for separate in (False, True):
        model, _ = create_model(StageConfig(model="test_resnet", in_chans=1, img_size=16), layout, separate=separate)
        model.eval()
        images = torch.from_numpy(rng.normal(size=(60, 1, 16, 16)).astype(np.float32))
        with torch.no_grad():  # a shared backbone gives its pooled features; a timm model, before its classifier
            features = [(source.backbone(images) if separate is False else
                         source.forward_head(source.forward_features(images), pre_logits=True)).numpy()
                        for source, _ in probe_slots(model)]
        probes = BlockProbes.fit(features, targets, layout)
        for column, (block, size) in enumerate(zip(features, layout.sizes)):
            weight, bias, _ = fit_probe(block, targets[:, column], size)
            np.testing.assert_allclose(probes.weights[column], weight)
            np.testing.assert_allclose(probes.biases[column], bias)
        probes.load_into(model)
        with torch.no_grad():
            held = layout.softmax(model(images)).numpy()
        np.testing.assert_allclose(held, probes.probs(features), atol=1e-5)
