"""A stage's fold models, loaded once, soft-voting over any subset of rows: what a combiner asks
for when it needs a stage's probabilities."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.data.tta import View
from hierclf.errors import HierclfError, RunError, option
from hierclf.hierarchy.stage import Stage
from hierclf.models.saved import load_model
from hierclf.models.spec import ModelSpec
from hierclf.predict.engine_names import ENGINES, IN_BF16, ON_CPU, PRECISIONS, QUANTISING, EngineChoice
from hierclf.predict.votes import Vote, make_vote
from hierclf.run.folder import Run
from hierclf.runtime.devices import resolve_device

log = logging.getLogger(__name__)


MAX_THREADS = 1024
"""The most threads an engine is given: more than any machine's cores (onnxruntime would try to
start each one; a billion of them is a traceback, or a machine brought to its knees)."""


@dataclass(frozen=True)
class Inference:
    """How prediction runs, whatever it predicts: images per batch, loader workers, the device
    ("auto", "cpu", "cuda", "cuda:1", "mps"), the test-time views (hflip, rot90, scale=1.1, …;
    None takes the recipe's predict.tta, and () none), and the engine that runs the fold models:
    torch, or onnxruntime or OpenVINO (on the CPU, with `threads` threads; 0: one per core; OpenVINO
    in `precision` f32 or bf16), any of the last two in int8 with `quantize`."""

    batch_size: int = 256
    workers: int = 2
    device: str = "auto"
    tta: tuple[str, ...] | None = None
    engine: str = "torch"
    threads: int = 0
    quantize: str = ""
    precision: str = "f32"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise HierclfError(f"{option('engine')} {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if self.quantize not in ("", "int8") or (self.quantize and self.engine not in QUANTISING):
            raise HierclfError(f"{option('quantize')} {self.quantize}: expected int8, with {option('engine')} "
                               f"{' or '.join(sorted(QUANTISING))}")
        if self.precision not in PRECISIONS or (self.precision == "bf16" and self.engine not in IN_BF16):
            raise HierclfError(f"{option('precision')} {self.precision}: expected f32, or bf16 with {option('engine')} "
                               f"{' or '.join(sorted(IN_BF16))}")
        if not 0 <= self.threads <= MAX_THREADS:
            raise HierclfError(f"{option('threads')} {self.threads}: expected 0 (one per core) to {MAX_THREADS}")
        if self.engine in ON_CPU and self.device not in ("auto", "cpu"):
            raise HierclfError(f"{option('engine')} {self.engine} runs on the CPU; with {option('device')} "
                               f"{self.device} use the torch engine")

    def described(self) -> str:
        """The engine in words, for the line predict prints."""
        if self.engine == "torch":
            return f"torch on {resolve_device(self.device).type}, {torch.get_num_threads()} threads"
        precision = " bf16" if self.precision == "bf16" else ""
        return (f"{self.engine}{precision}{' int8' if self.quantize else ''} on the CPU, "
                f"{f'{self.threads} threads' if self.threads else 'a thread per core'}")


class StageModels:
    """The fold models of one stage, loaded once, soft-voting over any subset of rows."""

    def __init__(self, run: Run, stage: Stage, device: torch.device, folds: Sequence[int] | None = None,
                 inference: Inference = Inference(), views: Sequence[View] = (), calibration: Items | None = None):
        """`folds` limits the vote to those fold models (every finished one by default); `views`
        are the test-time views, parsed; of `inference`, the batch size, workers and engine; with
        `inference.quantize`, the run's images its int8 graph is calibrated on."""
        finished = run.finished_folds(stage.name)
        command = f"hierclf fit-{'coarse' if stage.name == 'coarse' else 'fine'}"
        if folds is not None:
            _check_folds(run, stage.name, list(folds), finished, command)
        wanted = finished if folds is None else list(folds)
        if not wanted:
            raise RunError(f"{run.root} has no trained {stage.name} fold; run `{command}` first")
        if folds is None and len(wanted) < run.recipe.folds.count:
            log.warning("%s: using %d of %d folds (the others are not trained yet)", stage.name, len(wanted),
                     run.recipe.folds.count)
        on_cpu = inference.engine in ON_CPU
        loaded = [load_model(run.fold_dir(stage.name, fold), torch.device("cpu") if on_cpu else device)
                  for fold in wanted]
        specs = {spec for _, spec in loaded}
        if len(specs) != 1:
            raise RunError(f"{run.stage_dir(stage.name)}: the fold models differ in input size or classes")
        self.spec: ModelSpec = specs.pop()
        self.models = [model for model, _ in loaded]
        self.batch_size, self.workers = inference.batch_size, inference.workers
        calibrating = None if not inference.quantize else (lambda: (
            images.numpy() for images, _, _ in self._loader(calibration, torch.device("cpu"), 32)))
        engine = EngineChoice(inference.engine, inference.threads, inference.precision, stage.config.channels_last)
        self.vote: Vote = make_vote(engine, self.models, self.spec, views, torch.device("cpu") if on_cpu else device,
                                    calibrating)

    def in_float(self) -> "StageModels":
        """These fold models on the float graph, where they run an int8 one: nothing loaded or
        traced again."""
        twin = copy.copy(self)
        twin.vote = self.vote.in_float()
        return twin

    def _loader(self, items: Items, device: torch.device, batch_size: int) -> torch.utils.data.DataLoader:
        transform = build_transform(self.spec.img_size, self.spec.mean, self.spec.std)
        dataset = ImageDataset(items, None, transform, self.spec.in_chans)
        return make_loader(dataset, batch_size, workers=self.workers, device=device)

    def probs(self, items: Items) -> np.ndarray:
        """The mean softmax of the fold models (and their test-time views) for every row, in row order."""
        if len(items) == 0:
            return np.zeros((0, self.spec.num_classes), dtype=np.float32)
        probs, rows = self.vote(self._loader(items, self.vote.device, self.batch_size))
        return probs[np.argsort(rows)]


def _check_folds(run: Run, stage: str, folds: list[int], finished: Sequence[int], command: str) -> None:
    """Folds asked for by number: each once, each a fold of the run, each trained for `stage`."""
    asked = f"{option('folds')} {','.join(map(str, folds))}"
    repeated = sorted({fold for fold in folds if folds.count(fold) > 1})
    if repeated:
        raise RunError(f"{asked}: fold {repeated[0]} is named twice; name each fold once")
    count = run.recipe.folds.count
    unknown = [fold for fold in folds if not 0 <= fold < count]
    if unknown:
        raise RunError(f"{asked}: this run has folds 0..{count - 1}, no fold {unknown[0]}")
    untrained = [fold for fold in folds if fold not in finished]
    if untrained:
        raise RunError(f"{asked}: fold {untrained[0]} of {stage} is not trained yet; run `{command}` first, or "
                       f"leave it out")
