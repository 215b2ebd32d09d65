"""What a pipeline costs, read from its run folders, so `evaluate` can set cost beside score.

Training: the images every fold's model saw (training rows × epochs run), the same weighted by
input area (megapixels: a compute proxy across input sizes, where a 64 px image costs four
32 px ones), and the seconds its epochs took (metrics.jsonl). Inference: the model passes and
megapixels one test image costs `predict` (every fold model, every test-time view, and for a
specialist the share of images a combiner runs it on). A stage of separate models (one per
attribute head) counts each of its models.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hierclf.run.fold_files import read_history, read_result
from hierclf.run.folder import Run
from hierclf.hierarchy.stage import Stage


@dataclass(frozen=True)
class Cost:
    images: float = 0.0
    megapixels: float = 0.0
    seconds: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.images + other.images, self.megapixels + other.megapixels, self.seconds + other.seconds)

    def to_dict(self) -> dict[str, float]:
        return {"images": self.images, "megapixels": self.megapixels, "seconds": self.seconds}


def _models(stage: Stage) -> int:
    """Models one fold of the stage trains and runs: one per head with separate models."""
    return len(stage.layout.blocks) if stage.separate else 1


def stage_training_cost(run: Run, stage: Stage) -> Cost:
    """Every finished fold of `stage`: images seen (by each of its models), their megapixels, and
    the epochs' seconds."""
    return sum((fold_training_cost(run, stage, fold) for fold in run.finished_folds(stage.name)), Cost())


def fold_training_cost(run: Run, stage: Stage, fold: int) -> Cost:
    """One finished fold of `stage`: images seen, their megapixels, and its epochs' seconds."""
    folder = run.fold_dir(stage.name, fold)
    result = read_result(folder)
    images = float(result["train_rows"] * result["epochs_run"] * _models(stage))
    start = result.get("start") or {}  # LP-FT: its probe's features and regression, and epoch 0's validation
    seconds = epochs_seconds(folder)[1] + float(start.get("seconds", 0.0) if isinstance(start, dict) else 0.0)
    return Cost(images, images * stage.config.img_size ** 2 / 1e6, seconds)


def epochs_seconds(folder: Path) -> tuple[int, float]:
    """The epochs a fold's metrics.jsonl records, and their seconds (a fold not begun: none)."""
    lines = read_history(folder)
    return len(lines), sum(float(line.get("seconds", 0.0)) for line in lines)


def training_cost(run: Run, specialists: bool = True) -> dict[str, Any]:
    """Each stage's training cost and the total (without `specialists`: the coarse stage's alone):
    with a flat coarse run, its cost is counted, as the pipeline cannot exist without it.

    Args:
        run: the run folder, opened.
        specialists: count the specialists' training too.

    Returns:
        {"stages": {name: cost}, "images": …, "megapixels": …, "seconds": …} as `Cost.to_dict` gives."""
    stages = {stage.name: stage_training_cost(run, stage)
              for stage in (run.stages if specialists else [run.coarse_stage])}
    total = sum(stages.values(), Cost())
    return {"stages": {name: cost.to_dict() for name, cost in stages.items()}, **total.to_dict()}


def inference_cost(run: Run, specialist_share: Mapping[str, float] | None = None) -> dict[str, float]:
    """Model passes and megapixels per test image; `specialist_share` is the share of images each
    specialist runs on (every image where not given, as with the product)."""
    views = 1 + len(run.recipe.predict.tta)
    share = dict(specialist_share or {})
    stages = [(run.coarse_stage, 1.0)]
    stages += [(stage, share.get(name, 1.0)) for name, stage in run.specialist_stages.items()]
    passes = megapixels = 0.0
    for stage, runs_on in stages:
        stage_passes = len(run.finished_folds(stage.name)) * views * runs_on * _models(stage)
        passes += stage_passes
        megapixels += stage_passes * stage.config.img_size ** 2 / 1e6
    return {"passes": passes, "megapixels": megapixels}
