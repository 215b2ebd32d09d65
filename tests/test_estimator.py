"""The scikit-learn estimator: the library's own fit and predict behind fit / predict / predict_proba."""
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

from conftest import CLASSES, TINY_STAGE, shape_image
from hierclf import HierarchicalClassifier, Inference, Items, predict_items

RECIPE = {"folds": {"count": 2}, "coarse": {**TINY_STAGE, "epochs": 10}}


def images(per_class: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.asarray(CLASSES), per_class)  # string labels: left, middle, right
    pixels = np.stack([shape_image(CLASSES.index(label), rng) for label in labels])
    order = rng.permutation(len(labels))
    return pixels[order], labels[order]


def test_fit_predict_and_string_labels_round_trip():
    X, y = images()
    model = HierarchicalClassifier(recipe=RECIPE, random_state=3).fit(X, y)
    assert list(model.classes_) == sorted(CLASSES)
    X_test, y_test = images(per_class=8, seed=1)
    predicted = model.predict(X_test)
    assert predicted.dtype == y.dtype and set(predicted) <= set(CLASSES)
    assert model.score(X_test, y_test) >= 0.8  # chance is 1/3
    probs = model.predict_proba(X_test)
    assert probs.dtype == np.float64 and np.allclose(probs.sum(1), 1.0)
    same = predict_items(model.run_dir_, Items.from_arrays(X_test), inference=Inference(workers=0, device=model.device))
    assert np.allclose(probs, same.probs)  # exactly the library's prediction on the run
    assert (model.run_dir_ / "coarse" / "oof.npz").exists()


def test_clone_set_params_and_recipe_keys_as_double_underscore():
    model = HierarchicalClassifier(recipe=RECIPE, random_state=1)
    model.set_params(coarse__lr=0.01, random_state=2)
    assert model.overrides == {"coarse.lr": 0.01} and model.random_state == 2
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy is not model
    assert copy.overrides == {"coarse.lr": 0.01}


def test_cross_val_score_and_grid_search_over_a_recipe_key():
    X, y = images(per_class=48)  # each outer split trains on half, in 2 folds of its own
    scores = cross_val_score(HierarchicalClassifier(recipe=RECIPE), X, y, cv=2)
    assert len(scores) == 2 and scores.min() >= 0.7
    search = GridSearchCV(HierarchicalClassifier(recipe=RECIPE), {"coarse__lr": [2e-6, 3e-3]}, cv=2)
    search.fit(X, y)
    assert search.best_params_ == {"coarse__lr": 3e-3}  # a rate that learns beats one that cannot
    assert search.cv_results_["mean_test_score"][1] > search.cv_results_["mean_test_score"][0] + 0.2


def test_groups_train_specialists_and_paths_work_as_input(tmp_path):
    X, y = images()
    paths = []
    for row, pixels in enumerate(X):
        paths.append(tmp_path / f"{row}.png")
        Image.fromarray(pixels).save(paths[-1])
    model = HierarchicalClassifier(recipe=RECIPE, groups=[["left", "right"]], run_dir=tmp_path / "run").fit(paths, y)
    assert model.run_dir_ == tmp_path / "run" and (tmp_path / "run" / "fine").is_dir()
    assert model.score(paths, y) >= 0.8
    with pytest.raises(Exception, match="no such file|does not exist"):
        model.predict([tmp_path / "missing.png"])
