"""Reading a recipe: a TOML file (or nested dicts) with `--set` overrides becomes a checked,
frozen Recipe. Paths resolve to absolute ones; [fine] inherits [coarse], [fine.<name>] inherits
[fine], [heads.<name>] inherits [coarse]'s loss keys; every key is coerced and bounded
(`coerce`); a stage from pretrained weights takes the fine-tuning defaults where its tables set
nothing (`finetuning`); then the cross-key rules run (`rules`)."""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any

from hierclf.recipe.coerce import build_config, check_size, show_value, suggest
from hierclf.data.bounded import checked_input
from hierclf.errors import DataError, RecipeError
from hierclf.recipe.finetuning import fine_tuned
from hierclf.recipe.overrides import apply_override
from hierclf.recipe.schema import (NESTED_SECTIONS, SECTION_CLASSES, SECTIONS, HeadConfig, HierarchyConfig, LossConfig,
                            Recipe, StageConfig)
from hierclf.recipe.rules import check_recipe


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a TOML recipe, every key checked.

    Args:
        path: the recipe file; paths in it resolve against its folder.
        overrides: `section.key=value` changes (as `--set` gives them); paths in them resolve
            against the working directory.

    Returns:
        The frozen `Recipe`, every path in it absolute."""
    path = Path(path)
    try:
        text = checked_input(path, "recipe").read_text(encoding="utf-8-sig")  # a byte-order mark, as CSVs may have
    except DataError as error:
        raise RecipeError(str(error)) from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"recipe {path} cannot be read: {error}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{path}: not valid TOML: {error}") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested deeper than a recipe may be (arrays or inline tables within each "
                          f"other, thousands deep)") from None
    return recipe_from_dict(raw, source=str(path), overrides=overrides, base=path.resolve().parent)


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe", overrides: typing.Sequence[str] = (),
                     base: Path | None = None) -> Recipe:
    """Build a Recipe from nested dicts (a parsed TOML file), checking every key.

    Args:
        raw: the recipe's tables, {section: {key: value}}.
        source: what messages call the recipe (its file's name).
        overrides: `section.key=value` changes applied on top; their paths resolve against the
            working directory, and errors in them name the --set option.
        base: the folder relative paths resolve against (default: the working directory).

    Returns:
        The frozen `Recipe`, every path in it absolute."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a table of sections")
    check_size(raw, source)  # the file's own values, before paths resolve; again once --set applied
    raw = {name: dict(table) if isinstance(table, dict) else table for name, table in raw.items()}
    for name in NESTED_SECTIONS:
        if isinstance(raw.get(name), dict):
            raw[name] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw[name].items()}
    for name in raw:
        if name not in SECTIONS:
            raise RecipeError(f"{source}: unknown section [{name}]{suggest(name, SECTIONS)}; "
                              f"allowed: {', '.join(SECTIONS)}")
    for table_path, table in _tables(raw, source):
        _resolve_paths(table, _table_class(table_path), Path.cwd() if base is None else base)
    overridden = set()
    for text in overrides:
        keys = apply_override(raw, text)
        table = raw
        for part in keys[:-1]:
            table = table[part]
        _resolve_paths(table, _table_class(tuple(keys[:-1])), Path.cwd(), only=keys[-1])
        overridden.add(".".join(keys))
    check_size(raw, source)
    sections = {name: _build(cls, raw.get(name, {}), name, source, overridden)
                for name, cls in SECTION_CLASSES.items()}
    fine_table = raw.get("fine", {})
    group_tables = {k: v for k, v in fine_table.items() if isinstance(v, dict)}
    fine_keys = {k: v for k, v in fine_table.items() if not isinstance(v, dict)}
    fine = _build(StageConfig, fine_keys, "fine", source, overridden, inherit=sections["coarse"])
    specialists = tuple((name, _build(StageConfig, table, f"fine.{name}", source, overridden, inherit=fine))
                        for name, table in group_tables.items())
    heads = _build_heads(raw.get("heads", {}), sections["hierarchy"], sections["coarse"], source, overridden)
    # a stage from pretrained weights takes the fine-tuning defaults where its tables set nothing
    coarse_set = set(raw.get("coarse", {})) if isinstance(raw.get("coarse"), dict) else set()
    sections["coarse"] = fine_tuned(sections["coarse"], coarse_set)
    fine_set = coarse_set | set(fine_keys)
    specialists = tuple((name, fine_tuned(stage, fine_set | set(group_tables[name]))) for name, stage in specialists)
    recipe = Recipe(**sections, fine=fine_tuned(fine, fine_set), specialists=specialists, heads=heads)
    check_recipe(recipe, source)
    return recipe


def _build(cls: type, table: Any, name: str, source: str, overridden: typing.Collection[str],
           inherit: Any = None) -> Any:
    built = build_config(cls, table, name, source, overridden, inherit)
    if cls is StageConfig and isinstance(table, dict):
        # a stage that names its own starting weights (a file, timm's, or the coarse model's)
        # does not inherit another kind
        if table.get("weights") and "pretrained" not in table:
            built = dataclasses.replace(built, pretrained=False)
        if (table.get("pretrained") or table.get("init_from_coarse")) and "weights" not in table:
            built = dataclasses.replace(built, weights="")
    return built


def _build_heads(table: Any, hierarchy: HierarchyConfig, coarse: StageConfig, source: str,
                 overridden: typing.Collection[str]) -> tuple[tuple[str, HeadConfig], ...]:
    """Every attribute head's loss: [coarse]'s loss keys, then its [heads.<name>] table."""
    if not isinstance(table, dict):
        raise RecipeError(f"{source}: heads must be a table of [heads.<name>] tables, got {show_value(table)}")
    for name, sub in table.items():
        if not isinstance(sub, dict):
            raise RecipeError(f"{source}: heads.{name} must be a table ([heads.{name}]), got {show_value(sub)}")
        if name not in hierarchy.heads:
            allowed = ", ".join(hierarchy.heads) if hierarchy.heads else "none (set [hierarchy] heads first)"
            raise RecipeError(f"{source}: [heads.{name}]: there is no head {name!r}{suggest(name, hierarchy.heads)}; "
                              f"heads are {allowed}")
    inherited = HeadConfig(**{f.name: getattr(coarse, f.name) for f in dataclasses.fields(LossConfig)})
    return tuple((name, build_config(HeadConfig, table.get(name, {}), f"heads.{name}", source, overridden,
                                     inherit=inherited)) for name in hierarchy.heads)


def _table_class(table_path: tuple[str, ...]) -> type:
    if table_path[0] == "heads":
        return HeadConfig
    return StageConfig if table_path[0] == "fine" else SECTION_CLASSES[table_path[0]]


def _tables(raw: dict[str, Any], source: str) -> list[tuple[tuple[str, ...], dict]]:
    """Every table of the recipe with its path: ("coarse",), ("fine",), ("fine", "GROUP"), …"""
    tables = []
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise RecipeError(f"{source}: {name} must be a table ([{name}]), got {show_value(table)}")
        if name != "heads":
            tables.append(((name,), table))
        if name in NESTED_SECTIONS:
            tables += [((name, sub_name), sub) for sub_name, sub in table.items() if isinstance(sub, dict)]
    return tables


def _resolve_paths(table: dict[str, Any], cls: type, base: Path, only: str | None = None) -> None:
    """Path keys of `table` (all, or `only` that one) made absolute against `base`."""
    for item in dataclasses.fields(cls):
        value = table.get(item.name)
        if item.metadata["path"] and (only is None or item.name == only) and isinstance(value, str) and value:
            table[item.name] = str((base / Path(value).expanduser()).resolve())
