"""The key tables of docs/recipes.md, generated from the schema so the docs never drift from the
code (`make docs` writes them; a test fails when they differ)."""
from __future__ import annotations

import dataclasses
from typing import Any

from hierclf.recipe.coerce import show_value
from hierclf.recipe.finetuning import FINE_TUNING
from hierclf.recipe.schema import (SECTION_CLASSES, HeadConfig, LoaderConfig, LossConfig, MixConfig, ModelConfig,
                            OptimizerConfig, ScheduleConfig, StageConfig, TrainConfig)

STAGE_SLICES = (("Model", ModelConfig), ("Optimiser", OptimizerConfig), ("Schedule", ScheduleConfig),
                ("Mixup and CutMix", MixConfig), ("Epochs, steps and stopping", TrainConfig),
                ("Loading and augmentation", LoaderConfig), ("Loss", LossConfig), ("Device and seed", StageConfig))
"""The slices of a stage table, each with the keys its own class adds, in the order the docs show them."""


def key_reference() -> dict[str, list[tuple[str, Any, str]]]:
    """(key, default, doc) of every recipe key, by section."""
    classes = {**SECTION_CLASSES, "heads.<name>": HeadConfig}
    return {section: [(item.name, _default(item), item.metadata["doc"]) for item in dataclasses.fields(cls)]
            for section, cls in classes.items()}


def key_reference_markdown() -> str:
    """One table per section; the stage table ([coarse], and so [fine]) split by its slices."""
    lines = []
    for section, keys in key_reference().items():
        lines += [f"### [{section}]", ""]
        if SECTION_CLASSES.get(section) is StageConfig:
            documented = dict((name, (default, doc)) for name, default, doc in keys)
            for title, cls in STAGE_SLICES:
                own = [name for name in vars(cls).get("__annotations__", {}) if name in documented]
                lines += [f"#### {title}", ""] + _table([(name, *documented[name]) for name in own])
        else:
            lines += _table(keys)
    return "\n".join(lines)


def _table(keys: list[tuple[str, Any, str]]) -> list[str]:
    return (["| key | default | meaning |", "| --- | --- | --- |"]
            + [f"| `{name}` | {_default_cell(name, default)} | {_cell(doc)} |" for name, default, doc in keys] + [""])


def _default_cell(name: str, default: Any) -> str:
    """The default, and the fine-tuning one where a stage from pretrained weights takes another."""
    if name in FINE_TUNING:
        return f"`{show_value(default)}`; from pretrained weights `{show_value(FINE_TUNING[name])}`"
    return f"`{show_value(default)}`"


def _cell(text: str) -> str:
    """Text inside a Markdown table cell: a bare | would end the cell."""
    return text.replace("|", "\\|")


def _default(item: dataclasses.Field) -> Any:
    return item.default_factory() if item.default is dataclasses.MISSING else item.default
