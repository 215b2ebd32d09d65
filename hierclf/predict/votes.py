"""The one seam between predict and the engines that run a stage's fold vote (every fold model on
every test-time view, each output block's softmax averaged): a `Vote` turns a loader's batches
into every row's probabilities, whatever runs it. `make_vote` picks the engine once, by name
(engine_names.py lists them); an engine is a class here or a file of its own (onnx_engine.py,
openvino_engine.py: their packages are imported where a graph is traced), never a branch in the
callers."""
from __future__ import annotations

from typing import Callable, Iterable, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from hierclf.data.tta import View
from hierclf.models.inference import memory_layout, soft_vote
from hierclf.models.spec import ModelSpec
from hierclf.predict.engine_names import EngineChoice
from hierclf.predict.onnx_engine import OnnxVote
from hierclf.predict.openvino_engine import OpenVinoVote


class Vote(Protocol):
    """A stage's fold vote, ready to run."""

    device: torch.device
    """Where the loader's batches go (the engine reads them there)."""

    def __call__(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Every row's probabilities and its index, in the loader's order."""

    def in_float(self) -> "Vote":
        """The same vote in float: itself, unless it runs a quantised graph."""


class TorchVote:
    """The fold models run by torch, eagerly, on `device` (autocast where the device has it)."""

    def __init__(self, models: Sequence[torch.nn.Module], spec: ModelSpec, views: Sequence[View],
                 device: torch.device, channels_last: bool):
        self.memory_format = memory_layout(channels_last)
        self.models = [model.to(memory_format=self.memory_format) for model in models]
        self.layout, self.views, self.device = spec.layout, tuple(views), device

    def __call__(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        return soft_vote(self.models, loader, self.device, self.layout, tta=self.views,
                         memory_format=self.memory_format)

    def in_float(self) -> "TorchVote":
        return self


def make_vote(engine: EngineChoice, models: Sequence[torch.nn.Module], spec: ModelSpec, views: Sequence[View],
              device: torch.device, calibration: Callable[[], Iterable[np.ndarray]] | None = None) -> Vote:
    """The vote of `models` run by `engine` (its name one of ENGINES; checked by `Inference`); with
    `calibration` (normalised batches of the run's images, made when called), in int8."""
    if engine.name == "torch":
        return TorchVote(models, spec, views, device, engine.channels_last)
    batches = None if calibration is None else calibration()
    if engine.name == "openvino":
        return OpenVinoVote(models, spec, views, engine.threads, engine.precision, batches)
    return OnnxVote(models, spec, views, engine.threads, batches)
