"""A run's whole prediction as one torch module, from uint8 pixels to final labels: what `hierclf
export` turns into an ONNX graph. Each stage resizes and normalises the pixels as its loader does,
soft-votes its fold models over the test-time views, and applies its calibration; the combiner's
own module (`Combiner.module`, the one `predict_items` computes with) then gives the
probabilities and labels."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from hierclf.combine.arithmetic import Outputs
from hierclf.combine.temperature import BlockTemperatures
from hierclf.data.dataset import build_transform
from hierclf.data.tta import View
from hierclf.errors import HierclfError
from hierclf.hierarchy.stage import Stage
from hierclf.models.inference import vote
from hierclf.models.spec import ModelSpec
from hierclf.predict.pipeline import PredictionSetup
from hierclf.predict.stage_models import StageModels
from hierclf.run.folder import Run


class StageGraph(torch.nn.Module):
    """One stage on N×C×H×W pixels (0–255, float, any H and W): resized to the stage's input size
    bilinearly (half-pixel centres, as OpenCV's INTER_LINEAR that hierclf's loader uses) and
    rounded to whole levels as that resize's uint8 output is; normalised; each fold model on each
    view, the softmax of each output block averaged; each block temperature-scaled where the run
    calibrates. At the input size the resize is exact, and the result is `predict_items`'s."""

    def __init__(self, models: Sequence[torch.nn.Module], spec: ModelSpec, views: Sequence[View],
                 temperatures: Sequence[float] | None):
        super().__init__()
        self.models = torch.nn.ModuleList(models)
        self.layout, self.size, self.views = spec.layout, spec.img_size, tuple(views)
        self.calibration = None if temperatures is None else BlockTemperatures(spec.layout.sizes, temperatures)
        loader = build_transform(spec.img_size, spec.mean, spec.std)  # its normalisation's very tensors
        self.register_buffer("shift", loader.shift.clone())
        self.register_buffer("scale", loader.scale.clone())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        resized = torch.nn.functional.interpolate(pixels, size=(self.size, self.size), mode="bilinear",
                                                  align_corners=False).add(0.5).floor()
        probs = vote(self.models, (resized - self.shift) * self.scale, self.layout, self.views)
        return probs if self.calibration is None else self.calibration(probs)


class PipelineGraph(torch.nn.Module):
    """uint8 images, N×H×W×C (as decoded: rows, columns, channels) → the final probabilities
    (N × classes, float32) and labels (N, int64)."""

    def __init__(self, coarse: StageGraph, specialists: Sequence[StageGraph], combiner: torch.nn.Module):
        super().__init__()
        self.coarse, self.specialists, self.combiner = coarse, torch.nn.ModuleList(specialists), combiner

    def forward(self, images: torch.Tensor) -> Outputs:
        pixels = images.permute(0, 3, 1, 2).float()
        return self.combiner(self.coarse(pixels), [stage(pixels) for stage in self.specialists])


@dataclass(frozen=True, eq=False)
class BuiltGraph:
    """The module, the channels its input has, and what a server needs to know of it."""

    module: PipelineGraph
    channels: int
    about: dict[str, Any]


def build_graph(run: Run, combiner: str | None = None, folds: Sequence[int] | None = None,
                tta: Sequence[str] | None = None) -> BuiltGraph:
    """The run's prediction as `predict_items` would make it with the same combiner, folds and
    test-time views, as one module on the CPU, in evaluation mode."""
    setup = PredictionSetup.of(run, combiner, tta)
    device = torch.device("cpu")

    def stage_graph(stage: Stage) -> tuple[StageGraph, dict[str, Any]]:
        loaded = StageModels(run, stage, device, folds, views=setup.views)
        spec = loaded.spec
        temperatures = setup.calibration.temperatures.get(stage.name)
        described = {"name": stage.name, "arch": spec.arch, "img_size": spec.img_size, "mean": list(spec.mean),
                     "std": list(spec.std), "folds": len(loaded.models), "temperatures": temperatures}
        return StageGraph(loaded.models, spec, setup.views, temperatures), described

    coarse, coarse_about = stage_graph(run.coarse_stage)
    used = run.specialist_stages if setup.combiner.uses_specialists else {}
    specialists = [stage_graph(stage) for stage in used.values()]
    channels = {int(graph.shift.shape[1]) for graph in (coarse, *(graph for graph, _ in specialists))}
    if len(channels) != 1:
        raise HierclfError(f"{run.root}: its stages take images of {sorted(channels)} channels; one graph takes "
                           f"one kind of image")
    parts = list(used)
    module = PipelineGraph(coarse, [graph for graph, _ in specialists],
                           setup.combiner.module(run.hierarchy, parts).float()).eval()
    sizes = [described["img_size"] for described in (coarse_about, *(described for _, described in specialists))]
    about = {"classes": list(run.hierarchy.class_names), "combiner": setup.combiner.name,
             "exact_input_size": math.lcm(*sizes),
             "views": [view.name if view.name != "scale" else f"scale={view.factor:g}" for view in setup.views],
             "stages": [coarse_about, *(described for _, described in specialists)]}
    return BuiltGraph(module, channels.pop(), about)
