"""TOML values into typed config objects: each value coerced to its field's type and checked
against its bounds, with messages that name where the value came from and what is allowed."""
from __future__ import annotations

import dataclasses
import difflib
import json
import operator
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from hierclf.errors import RecipeError, option
from hierclf.recipe.schema import plain


def build_config(cls: type, table: Any, name: str, source: str, overridden: typing.Collection[str] = (),
                 inherit: Any = None) -> Any:
    """One config object of `cls` from the table [name] of `source`; keys it does not set come from
    `inherit` (or the defaults). A key in `overridden` came from `--set`, and its messages say so."""
    if not isinstance(table, dict):
        raise RecipeError(f"{source}: {name} must be a table ([{name}]), got {show_value(table)}")
    hints = typing.get_type_hints(cls)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise RecipeError(f"{source}: unknown key {name}.{key}{suggest(key, fields)}; "
                              f"allowed in [{name}]: {', '.join(fields)}")
        where = (f"{option('overrides')} {name}.{key}={show_value(value)}" if f"{name}.{key}" in overridden
                 else f"{source}: {name}.{key} = {show_value(value)}")
        checked = coerce(value, hints[key], where)
        check_bounds(checked, fields[key].metadata, where)
        values[key] = checked
    return dataclasses.replace(inherit, **values) if inherit is not None else cls(**values)


def coerce(value: Any, kind: Any, where: str) -> Any:
    """`value` as the type `kind` (TOML integers become floats where a float is wanted), or a
    RecipeError naming `where` and the type expected."""
    origin = get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        if value in get_args(kind):
            return value
    elif kind is Any:
        return value
    elif origin is dict:
        value_kind = get_args(kind)[1]
        if isinstance(value, dict):
            return {str(name): coerce(item, value_kind, f"{where} ({name})") for name, item in value.items()}
    elif origin is tuple:
        item_kind = get_args(kind)[0]
        if isinstance(value, (list, tuple)):
            try:
                return tuple(coerce(item, item_kind, where) for item in value)
            except RecipeError:
                pass
    elif origin in (Union, types.UnionType):
        for alternative in get_args(kind):
            try:
                return coerce(value, alternative, where)
            except RecipeError:
                continue
    raise RecipeError(f"{where}: expected {describe(kind)}")


_BOUNDS = (("lo", operator.ge, "≥"), ("hi", operator.le, "≤"), ("gt", operator.gt, ">"), ("lt", operator.lt, "<"))


def check_bounds(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    """A number against its field's lo/hi (inclusive) and gt/lt (exclusive) bounds."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for name, holds, sign in _BOUNDS:
        bound = meta.get(name)
        if bound is not None and not holds(value, bound):
            raise RecipeError(f"{where}: expected a value {sign} {bound}")


def describe(kind: Any) -> str:
    """A type as a recipe writer reads it: 'an integer', "one of 'a', 'b'", 'a list of numbers'."""
    origin = get_origin(kind)
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(option) for option in get_args(kind))
    if kind is Any:
        return "a value"
    if origin is tuple:
        return f"a list of {_plural(describe(get_args(kind)[0]))}"
    if origin is dict:
        return f"a table whose values are each {describe(get_args(kind)[1])}"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(option) for option in get_args(kind))
    return str(kind)


def _plural(description: str) -> str:
    for article in ("an ", "a "):
        if description.startswith(article):
            description = description[len(article):]
    return description.replace("integer", "integers").replace("string", "strings").replace("number", "numbers")


def suggest(word: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean 'epochs'?)' when a choice is close to `word`, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def show_value(value: Any, limit: int = 200) -> str:
    """A value as the recipe would spell it, on one line, cut at `limit` characters."""
    try:
        shown = json.dumps(plain(value), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        shown = repr(value)
    return shown if len(shown) <= limit else f"{shown[:limit]}… ({len(shown):,} characters)"


MAX_TEXT, MAX_DEPTH = 4096, 8
"""The longest text a recipe value may hold (a path, a class name) and how deep its tables and
arrays may nest ([fine.<group>] keys hold lists of lists at most): far beyond any real recipe,
and short of what a message can show or the reader's recursion can take."""


def check_size(raw: Any, source: str) -> None:
    """Refuse a recipe nested deeper than MAX_DEPTH or holding a text longer than MAX_TEXT, walked
    without recursion (a hostile file must not overflow the stack here either)."""
    stack = [(raw, 1, "")]
    while stack:
        value, depth, where = stack.pop()
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise RecipeError(f"{source}: {where or 'a value'} holds {len(value):,} characters, more than the "
                              f"{MAX_TEXT:,} a recipe value may")
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, child in children:
            if isinstance(child, (dict, list)) and depth >= MAX_DEPTH:
                raise RecipeError(f"{source}: {where or 'the recipe'} is nested deeper than the {MAX_DEPTH} levels a "
                                  f"recipe may be")
            if isinstance(key, str) and len(key) > MAX_TEXT:
                raise RecipeError(f"{source}: a key holds {len(key):,} characters, more than the {MAX_TEXT:,} a "
                                  f"recipe key may")
            named = where if isinstance(key, int) else f"{where}.{key}" if where else key  # keys, not indices
            stack.append((child, depth + 1, named))
