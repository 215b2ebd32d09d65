"""The only places that choose a kind of hierarchy: from a recipe's [hierarchy] and the data's
classes (`build_hierarchy`), from a run's hierarchy.json (`hierarchy_from_json`), and the
attributes a recipe's labels are made of before any data is read (`label_attributes`)."""
from __future__ import annotations

from typing import Sequence

from hierclf.errors import RecipeError, RunError
from hierclf.hierarchy.factors import FactorHierarchy, Head
from hierclf.hierarchy.groups import GroupHierarchy
from hierclf.hierarchy.protocol import Hierarchy
from hierclf.readback import parse_json
from hierclf.recipe.schema import HierarchyConfig


def build_hierarchy(config: HierarchyConfig, class_names: Sequence[str]) -> Hierarchy:
    """The hierarchy a recipe's [hierarchy] describes, over the data's classes.

    Args:
        config: the recipe's [hierarchy] section.
        class_names: the data's classes, in label order. With attribute heads the hierarchy names
            the joint classes itself, and rows labelled by joint index (0, 1, …) are accepted.

    Returns:
        A `GroupHierarchy` (groups, or none: a flat run) or a `FactorHierarchy` (heads)."""
    if config.heads:
        if config.coarse_run:
            raise RecipeError("hierarchy.coarse_run: a flat run can be the coarse stage of groups, not of heads")
        factors = FactorHierarchy.from_config(config.heads, config.separate)
        joint_indices = tuple(str(index) for index in range(len(class_names)))
        if tuple(class_names) == joint_indices:  # rows labelled by joint index (in-memory arrays)
            if len(class_names) != factors.num_classes:
                raise RecipeError(f"hierarchy.heads make {factors.num_classes} joint classes (the product of the "
                                  f"head sizes) but the data's labels run 0..{len(class_names) - 1}; every joint "
                                  f"class needs rows, and no label may pass {factors.num_classes - 1}")
            return factors  # the heads name the classes
        if tuple(class_names) != factors.class_names:
            raise RecipeError(f"hierarchy.heads make {factors.num_classes} classes "
                              f"({', '.join(factors.class_names[:3])}, …) but the data has {len(class_names)} "
                              f"({', '.join(class_names[:3])}, …)")
        return factors
    return GroupHierarchy.from_config(config.groups, config.group_names, class_names, bool(config.coarse_run))


def label_attributes(config: HierarchyConfig) -> tuple[Head, ...]:
    """The attributes a recipe's labels combine (its heads), or none: what a data source needs to
    read labels given one column per attribute."""
    return FactorHierarchy.from_config(config.heads).heads if config.heads else ()


def hierarchy_from_json(text: str, source: str = "hierarchy.json") -> Hierarchy:
    """Read hierarchy.json, whichever kind it holds."""
    try:
        kind = parse_json(text).get("kind", "groups")
    except (ValueError, AttributeError) as error:
        raise RunError(f"{source} is not a hierarchy file: {error}") from None
    return FactorHierarchy.from_json(text, source) if kind == "factors" else GroupHierarchy.from_json(text, source)
