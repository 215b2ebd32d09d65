"""predict's onnxruntime engine: each stage's fold vote (every fold model on every test-time view,
the softmax of each output block averaged) traced once into an ONNX graph in memory and run by
onnxruntime on the CPU. The loader, the calibration and the combiner stay the torch engine's, so
the two engines differ only by float rounding; nothing is written into the run folder."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from hierclf.data.tta import View
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.inference import vote
from hierclf.models.onnx_graph import cpu_session, onnx_modules, traced
from hierclf.models.spec import ModelSpec

ENGINES = ("torch", "onnxruntime")


class _StageVote(torch.nn.Module):
    """The fold models' vote over the views, on normalised N×C×H×W batches: `soft_vote`'s step."""

    def __init__(self, models: Sequence[torch.nn.Module], layout: OutputLayout, views: Sequence[View]):
        super().__init__()
        self.models, self.layout, self.views = torch.nn.ModuleList(models), layout, tuple(views)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return vote(self.models, images, self.layout, self.views)


class OnnxVote:
    """One stage's fold vote as an onnxruntime session, its batch size free."""

    def __init__(self, models: Sequence[torch.nn.Module], spec: ModelSpec, views: Sequence[View], threads: int = 0):
        onnx_modules("predict --engine onnxruntime")
        module = _StageVote([model.eval() for model in models], spec.layout, views).eval()
        sample = torch.zeros(2, spec.in_chans, spec.img_size, spec.img_size)
        proto = traced(module, sample, "images", ("probs",), {0: "batch"})
        self.session = cpu_session(proto.SerializeToString(), threads)

    def __call__(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Every row's probabilities and its index, as `soft_vote` returns them."""
        probs, rows = [], []
        for images, _, row in loader:
            batch = np.ascontiguousarray(images.numpy(), dtype=np.float32)
            probs.append(self.session.run(["probs"], {"images": batch})[0])
            rows.append(row.numpy())
        if not probs:
            return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return np.concatenate(probs).astype(np.float32), np.concatenate(rows)
