"""hierclf: hierarchical two-stage image classification with leakage-safe K-fold."""
import os as _os

# albumentations asks PyPI for a newer version at import; that is a network call on every run.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

from hierclf.errors import HierclfError  # noqa: E402
from hierclf.hierarchy import GroupHierarchy  # noqa: E402
from hierclf.recipe import Recipe, StageConfig, load_recipe  # noqa: E402

__all__ = ["GroupHierarchy", "HierclfError", "Recipe", "StageConfig", "load_recipe", "__version__"]
