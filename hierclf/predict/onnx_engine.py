"""predict's onnxruntime engine: each stage's fold vote (every fold model on every test-time view,
the softmax of each output block averaged) traced once into an ONNX graph in memory and run by
onnxruntime on the CPU. The loader, the calibration and the combiner stay the torch engine's, so
the two engines differ only by float rounding; nothing is written into the run folder."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from hierclf.data import Items, load_training_items
from hierclf.data.dataset import ImageTransform
from hierclf.data.tta import View
from hierclf.errors import DataError, option
from hierclf.hierarchy.build import label_attributes
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.inference import vote
from hierclf.models.onnx_graph import cpu_session, onnx_modules, quantized_int8, traced
from hierclf.models.spec import ModelSpec
from hierclf.run.folder import Run

CALIBRATION_ROWS, CHECK_ROWS = 256, 512
"""int8: the training images its activations are calibrated on, and the others it is checked on."""


class _StageVote(torch.nn.Module):
    """The fold models' vote over the views, on normalised N×C×H×W batches: `soft_vote`'s step."""

    def __init__(self, models: Sequence[torch.nn.Module], layout: OutputLayout, views: Sequence[View]):
        super().__init__()
        self.models, self.layout, self.views = torch.nn.ModuleList(models), layout, tuple(views)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return vote(self.models, images, self.layout, self.views)


def stage_graph(models: Sequence[torch.nn.Module], spec: ModelSpec, views: Sequence[View]) -> Any:
    """The fold models' vote over `views` as an ONNX ModelProto: input "images" (normalised
    N×C×H×W, the batch free), output "probs". Every engine on an ONNX graph runs this one."""
    module = _StageVote([model.eval() for model in models], spec.layout, views).eval()
    sample = torch.zeros(2, spec.in_chans, spec.img_size, spec.img_size)
    return traced(module, sample, "images", ("probs",), {0: "batch"})


def run_batches(loader: DataLoader, run_batch: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every row's probabilities and its index, as `soft_vote` returns them, from `run_batch` of
    each of the loader's batches (float32, contiguous): the loop every graph engine shares."""
    probs, rows = [], []
    for images, _, row in loader:
        probs.append(run_batch(np.ascontiguousarray(images.numpy(), dtype=np.float32)))
        rows.append(row.numpy())
    if not probs:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(probs).astype(np.float32), np.concatenate(rows)


class OnnxVote:
    """One stage's fold vote as an onnxruntime session, its batch size free."""

    def __init__(self, models: Sequence[torch.nn.Module], spec: ModelSpec, views: Sequence[View], threads: int = 0,
                 calibration: Iterable[np.ndarray] | None = None):
        """With `calibration` (normalised batches of the run's images) the graph runs in int8."""
        self.device = torch.device("cpu")
        onnx_modules(f"predict {option('engine')} onnxruntime")
        proto = stage_graph(models, spec, views)
        self.float_session = cpu_session(proto.SerializeToString(), threads)
        self.session = self.float_session if calibration is None else \
            cpu_session(quantized_int8(proto, calibration, "images"), threads)

    def in_float(self) -> "OnnxVote":
        """The same vote on the float graph traced for it (an int8 vote's check compares the two)."""
        twin = copy.copy(self)
        twin.session = self.float_session
        return twin

    def __call__(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Every row's probabilities and its index, as `soft_vote` returns them."""
        return run_batches(loader, lambda batch: self.session.run(["probs"], {"images": batch})[0])


def int8_rows(run: Run) -> tuple[Items, Items]:
    """The run's training images an int8 graph is calibrated on, and the others it is checked on
    (a seeded draw, so every call quantises alike); where they are not where the run's recipe
    says, one line saying why predict needs them."""
    why = (f"{option('quantize')} int8 calibrates and checks the int8 graph on {run.root}'s own training images, read as its "
           f"recipe.toml's [data] says")
    try:
        items = load_training_items(run.recipe.data, label_attributes(run.recipe.hierarchy), check_files=False)
    except DataError as error:
        raise DataError(f"{why}: {error}; put them back there, or predict without {option('quantize')}") from None
    items = dataclasses.replace(items, class_names=run.hierarchy.class_names)
    order = np.random.default_rng(0).permutation(len(items))
    calibrating = min(CALIBRATION_ROWS, len(items) // 2)  # a small set gives half to each
    chosen = items.subset(order[:calibrating + CHECK_ROWS])
    missing = [path for path in (chosen.paths if chosen.paths is not None else []) if not Path(path).is_file()]
    if missing:
        raise DataError(f"{why}: {len(missing)} of the {len(chosen)} it uses are gone ({missing[0]}…); put them back "
                        f"there, or predict without {option('quantize')}")
    return items.subset(order[:calibrating]), items.subset(order[calibrating:calibrating + CHECK_ROWS])


def pixel_batches(items: Items, side: int, channels: int, batch: int = 32) -> Iterator[np.ndarray]:
    """uint8 N×side×side×C batches of `items`, resized as the loader resizes."""
    transform = ImageTransform(side, (0.0,) * channels, (1.0,) * channels)
    for start in range(0, len(items), batch):
        yield np.stack([transform.pixels(items.image(row, channels, transform.decode_side))
                        for row in range(start, min(start + batch, len(items)))])
