"""`--set section.key=value`: one recipe key changed for one command, on the parsed TOML before
it is checked, so an override is validated exactly like the file's own keys."""
from __future__ import annotations

import tomllib
from typing import Any

from hierclf.recipe.coerce import MAX_TEXT, suggest
from hierclf.errors import RecipeError, option
from hierclf.recipe.schema import NESTED_SECTIONS, SECTIONS


def parse_override(text: str) -> tuple[list[str], Any]:
    """`coarse.epochs=3` → (["coarse", "epochs"], 3); `fine.GROUP.img_size=64` has three parts.
    The value is read as TOML, else kept as text."""
    if "=" not in text:
        raise RecipeError(f"{option('overrides')} {text!r}: expected section.key=value")
    dotted, value_text = text.split("=", 1)
    keys = [part.strip() for part in dotted.strip().split(".")]
    two_parts = len(keys) == 2 and keys[0] != "heads"
    three_parts = len(keys) == 3 and keys[0] in NESTED_SECTIONS
    if not all(keys) or not (two_parts or three_parts):
        raise RecipeError(f"{option('overrides')} {text!r}: expected section.key=value (e.g. coarse.epochs=3), "
                          f"fine.GROUP.key=value or heads.HEAD.key=value")
    if len(value_text) > MAX_TEXT:
        raise RecipeError(f"{option('overrides')} {dotted.strip()}=…: its value holds {len(value_text):,} characters, more than the "
                          f"{MAX_TEXT:,} a recipe value may")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text
    except RecursionError:
        raise RecipeError(f"{option('overrides')} {dotted.strip()}=…: its value is nested deeper than a recipe value may be") from None
    return keys, value


def apply_override(raw: dict[str, Any], text: str) -> list[str]:
    """Write one override into the parsed recipe `raw` (tables created as needed); returns its keys."""
    keys, value = parse_override(text)
    if keys[0] not in SECTIONS:
        raise RecipeError(f"{option('overrides')} {text!r}: unknown section {keys[0]!r}{suggest(keys[0], SECTIONS)}")
    table = raw
    for part in keys[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise RecipeError(f"{option('overrides')} {text!r}: {'.'.join(keys[:-1])} in the recipe is not a table")
    table[keys[-1]] = value
    return keys
