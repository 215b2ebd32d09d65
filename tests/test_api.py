"""hierclf as a library: in-memory arrays in, a run folder and predictions out."""
import inspect

import numpy as np
import pytest

import hierclf
from conftest import TINY_STAGE, shape_image


def arrays(per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), per_class)
    return np.stack([shape_image(label, rng) for label in labels]), labels


def test_fit_and_predict_on_in_memory_arrays_with_a_hold_out(tmp_path):
    images, labels = arrays(20, seed=0)
    items = hierclf.Items.from_arrays(images, labels, ["left", "middle", "right"])
    recipe = hierclf.recipe_from_dict({"folds": {"count": 1, "holdout": 0.25}, "coarse": TINY_STAGE})
    summary = hierclf.fit_coarse(recipe, tmp_path / "run", items=items)
    assert summary["rows"] == 15 and len(summary["folds"]) == 1  # one stratified hold-out of a quarter
    assert summary["oof_accuracy"] >= 0.8
    test_images, test_labels = arrays(10, seed=1)
    predictions = hierclf.predict_items(tmp_path / "run", hierclf.Items.from_arrays(test_images),
                                        inference=hierclf.Inference(workers=0))
    assert predictions.probs.shape == (30, 3) and predictions.class_names == ("left", "middle", "right")
    assert (predictions.labels == test_labels).mean() >= 0.8


def test_public_names_resolve_to_their_modules_and_are_documented():
    """Each public name is the object its module defines (not a stale copy, not a module), with a
    docstring; an unknown name is an AttributeError; the version is the package's."""
    import importlib
    import importlib.metadata

    from hierclf import _EXPORTS
    for name, module in _EXPORTS.items():
        value = getattr(hierclf, name)
        assert value is getattr(importlib.import_module(module), name), name
        assert not inspect.ismodule(value), name
        if callable(value):
            assert (inspect.getdoc(value) or "").strip(), f"{name} has no docstring"
    assert sorted(hierclf.__all__) == sorted([*_EXPORTS, "__version__"])
    with pytest.raises(AttributeError, match="no attribute 'fit_corse'"):
        hierclf.fit_corse
    assert hierclf.__version__ == importlib.metadata.version("hierclf")
