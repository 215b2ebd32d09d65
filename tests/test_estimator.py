"""The scikit-learn estimator: the library's own fit and predict behind fit / predict / predict_proba."""
import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score

from conftest import CLASSES, TINY_STAGE, shape_image
from hierclf import HierarchicalClassifier, Inference, Items, predict_items
from hierclf.errors import HierclfError

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


def test_cross_val_score_and_grid_search_over_a_recipe_key(tmp_path):
    """With a fixed run_dir too: every split and candidate trains into a run folder of its own."""
    X, y = images(per_class=48)  # each outer split trains on half, in 2 folds of its own
    scores = cross_val_score(HierarchicalClassifier(recipe=RECIPE, run_dir=tmp_path / "cv"), X, y, cv=2)
    assert len(scores) == 2 and scores.min() >= 0.7
    assert len(list((tmp_path / "cv").glob("fit-*"))) == 2
    search = GridSearchCV(HierarchicalClassifier(recipe=RECIPE, run_dir=tmp_path / "grid"),
                          {"coarse__lr": [2e-6, 3e-3]}, cv=2)
    search.fit(X, y)
    assert search.best_params_ == {"coarse__lr": 3e-3}  # a rate that learns beats one that cannot
    assert search.cv_results_["mean_test_score"][1] > search.cv_results_["mean_test_score"][0] + 0.2
    assert len(list((tmp_path / "grid").glob("fit-*"))) == 5  # 2 candidates × 2 splits, and the refit
    assert search.best_estimator_.run_dir_.parent == tmp_path / "grid"


def test_a_refit_with_a_fixed_run_dir_trains_on_what_it_is_given(tmp_path):
    """Other images with labels in the same order: a run of its own, not the old models; the
    same images and recipe again: the finished run, resumed."""
    X, y = images(per_class=8)
    quick = {**RECIPE, "coarse": {**RECIPE["coarse"], "epochs": 1}}
    model = HierarchicalClassifier(recipe=quick, run_dir=tmp_path).fit(X, y)
    first, expected = model.run_dir_, model.predict_proba(X[:6])
    model.fit(255 - X, y)
    assert model.run_dir_ != first and model.run_dir_.parent == tmp_path
    assert not np.allclose(model.predict_proba(X[:6]), expected)
    model.fit(X, y)
    assert model.run_dir_ == first and np.allclose(model.predict_proba(X[:6]), expected)
    with pytest.raises(HierclfError, match="is a run folder; each fit trains into a folder of its own"):
        HierarchicalClassifier(recipe=quick, run_dir=first).fit(X, y)


def test_image_arrays_of_one_size_stack_and_of_several_are_refused(tmp_path):
    from hierclf.errors import DataError

    X, y = images(per_class=8)
    quick = {**RECIPE, "coarse": {**RECIPE["coarse"], "epochs": 1}}
    model = HierarchicalClassifier(recipe=quick, random_state=3).fit(list(X), y)
    assert np.allclose(model.predict_proba(list(X[:5])), model.predict_proba(X[:5]))
    mixed = [X[0], X[1][:10], *X[2:]]
    with pytest.raises(DataError, match=r"image arrays differ in size \(row 0 is 16×16, row 1 is 10×16\)"):
        model.predict(mixed)
    with pytest.raises(DataError, match="row 1 is a str among image arrays"):
        model.fit([X[0], "a.png", *X[2:]], y)


def test_groups_train_specialists_and_paths_work_as_input(tmp_path):
    X, y = images()
    paths = []
    for row, pixels in enumerate(X):
        paths.append(tmp_path / f"{row}.png")
        Image.fromarray(pixels).save(paths[-1])
    model = HierarchicalClassifier(recipe=RECIPE, groups=[["left", "right"]], run_dir=tmp_path / "run").fit(paths, y)
    assert model.run_dir_.parent == tmp_path / "run" and (model.run_dir_ / "fine").is_dir()
    assert model.score(paths, y) >= 0.8
    with pytest.raises(Exception, match="no such file|does not exist"):
        model.predict([tmp_path / "missing.png"])


def test_a_fitted_estimator_survives_pickling_into_a_new_process_and_copying(tmp_path):
    import copy
    import gc
    import pickle
    import subprocess
    import sys

    X, y = images(per_class=8)
    quick = {**RECIPE, "coarse": {**RECIPE["coarse"], "epochs": 1}}  # what is saved matters, not how well it learnt
    model = HierarchicalClassifier(recipe=quick, random_state=3).fit(X, y)
    expected = model.predict_proba(X[:10])
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model))
    np.save(tmp_path / "x.npy", X[:10])
    copied = copy.deepcopy(model)
    folder = model.run_dir_.parent
    del model
    gc.collect()
    assert not folder.exists()  # the original's temporary run is gone with it
    assert np.allclose(copied.predict_proba(X[:10]), expected)  # the copy carries its own
    script = ("import pickle, sys, numpy as np\n"
              "model = pickle.loads(open(sys.argv[1], 'rb').read())\n"
              "np.save(sys.argv[3], model.predict_proba(np.load(sys.argv[2])))\n")
    subprocess.run([sys.executable, "-c", script, tmp_path / "model.pkl", tmp_path / "x.npy", tmp_path / "p.npy"],
                   check=True)
    assert np.allclose(np.load(tmp_path / "p.npy"), expected)


@pytest.mark.parametrize("X, y, message", [
    (np.zeros((6, 8, 8), np.uint8), ["a", "b", None, "a", "b", "a"], "row 2 has no label"),
    (np.zeros((6, 8, 8), np.uint8), [0.0, 1.0, np.nan, 0.0, 1.0, 0.0], "row 2 has no label"),
    (np.zeros((6, 8, 8), np.uint8), ["a"] * 6, "every row has the label 'a'"),
    (np.zeros((6, 8, 8), np.uint8), ["a", "b"] * 2, "X has 6 rows but y has 4"),
    (np.zeros((6, 4)), ["a", "b"] * 3, "tabular data"),
    (np.arange(6), ["a", "b"] * 3, "got a 1-D"),
    (np.zeros((0, 8, 8), np.uint8), [], "X holds no rows"),
    ("images/", ["a", "b"], "got str"),
])
def test_the_estimator_refuses_input_it_cannot_learn_from(X, y, message):
    from hierclf.errors import DataError

    with pytest.raises(DataError, match=message):
        HierarchicalClassifier(recipe=RECIPE).fit(X, y)


def test_predict_before_fit_raises_scikit_learns_not_fitted_error():
    from sklearn.exceptions import NotFittedError

    for method in ("predict", "predict_proba"):
        with pytest.raises(NotFittedError):
            getattr(HierarchicalClassifier(), method)(np.zeros((2, 8, 8), np.uint8))
