"""hierclf: hierarchical two-stage image classification with leakage-safe K-fold.

    from hierclf import load_recipe, fit_coarse, predict_items, Items
    summary = fit_coarse(load_recipe("recipes/digits.toml"), "runs/digits")
    predictions = predict_items("runs/digits", Items.from_arrays(images))

Names are imported on first use, so `import hierclf` (and `hierclf --help`) stays quick.
"""
import importlib
import os as _os

# albumentations asks PyPI for a newer version at import; that is a network call on every run.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

_EXPORTS = {
    "HierclfError": "hierclf.errors",
    "GroupHierarchy": "hierclf.hierarchy.kinds", "FactorHierarchy": "hierclf.hierarchy.kinds",
    "encode_factors": "hierclf.hierarchy.kinds", "decode_factors": "hierclf.hierarchy.kinds",
    "Recipe": "hierclf.recipe.schema", "StageConfig": "hierclf.recipe.schema", "load_recipe": "hierclf.recipe.reading",
    "recipe_from_dict": "hierclf.recipe.reading",
    "Items": "hierclf.data", "load_training_items": "hierclf.data", "load_input_items": "hierclf.data",
    "fit": "hierclf.train", "fit_coarse": "hierclf.train", "fit_fine": "hierclf.train",
    "assign_folds": "hierclf.train", "evaluate_run": "hierclf.report.evaluate", "suggest_groups": "hierclf.hierarchy.kinds",
    "predict_items": "hierclf.predict.pipeline", "predict_runs": "hierclf.predict.pipeline", "write_predictions": "hierclf.predict.pipeline",
    "Predictions": "hierclf.predict.pipeline", "Run": "hierclf.run.folder", "OutputLayout": "hierclf.hierarchy.layout",
    "COMBINERS": "hierclf.combine.combiners", "HierarchicalClassifier": "hierclf.estimator",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hierclf' has no attribute {name!r}")
