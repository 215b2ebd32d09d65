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
    # a recipe
    "Recipe": "hierclf.recipe.schema", "StageConfig": "hierclf.recipe.schema", "HeadConfig": "hierclf.recipe.schema",
    "load_recipe": "hierclf.recipe.reading", "recipe_from_dict": "hierclf.recipe.reading",
    # rows
    "Items": "hierclf.data", "load_training_items": "hierclf.data", "load_input_items": "hierclf.data",
    "encode_factors": "hierclf.data.labels", "decode_factors": "hierclf.data.labels",
    # built-in data sets, in the competition layout (as `hierclf dataset` writes them)
    "write_digits": "hierclf.data.builtin", "write_fashion_mnist": "hierclf.data.builtin",
    "read_fashion_mnist": "hierclf.data.builtin", "FASHION_MNIST_CLASSES": "hierclf.data.builtin",
    "FASHION_MNIST_DIR": "hierclf.data.builtin",
    # hierarchies, stages' outputs, combiners
    "GroupHierarchy": "hierclf.hierarchy.groups", "FactorHierarchy": "hierclf.hierarchy.factors",
    "build_hierarchy": "hierclf.hierarchy.build", "suggest_groups": "hierclf.hierarchy.suggest",
    "OutputLayout": "hierclf.hierarchy.layout", "COMBINERS": "hierclf.combine.registry",
    # training
    "fit_coarse": "hierclf.train.commands", "fit_fine": "hierclf.train.commands", "fit": "hierclf.train.loop",
    "FitRecord": "hierclf.train.record", "FitResult": "hierclf.train.state", "Placement": "hierclf.runtime.processes",
    "assign_folds": "hierclf.train.kfold", "Run": "hierclf.run.folder", "linear_probe": "hierclf.train.probe_run",
    "read_history": "hierclf.run.fold_files",
    # prediction
    "predict_items": "hierclf.predict.pipeline", "predict_runs": "hierclf.predict.pipeline",
    "Inference": "hierclf.predict.pipeline", "Predictions": "hierclf.predict.output",
    "write_predictions": "hierclf.predict.output", "Shard": "hierclf.predict.shards",
    "write_shard": "hierclf.predict.shards", "shard_origin": "hierclf.predict.shards",
    "export_onnx": "hierclf.export.onnx_file",
    # reports
    "evaluate_run": "hierclf.report.evaluate", "Report": "hierclf.report.report",
    "run_rows": "hierclf.report.runs_table", "RunRow": "hierclf.report.runs_table",
    "score_run": "hierclf.report.evaluate", "training_cost": "hierclf.report.costs",
    "scores": "hierclf.metrics", "paired_difference": "hierclf.metrics",
    # errors, and the library as a scikit-learn estimator
    "HierclfError": "hierclf.errors", "HierarchicalClassifier": "hierclf.estimator",
}
__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hierclf' has no attribute {name!r}")
