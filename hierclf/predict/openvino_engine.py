"""predict's OpenVINO engine: each stage's fold vote traced to the same ONNX graph as the
onnxruntime engine's (in memory) and compiled by OpenVINO for the CPU, where it uses the matrix
units neither torch eager nor onnxruntime's CPU provider reach: AVX-512 and, with `bf16`, AMX's
bf16 tiles; with int8, OpenVINO's own post-training quantisation (NNCF). The loader, the
calibration and the combiner stay the torch engine's; nothing is written into the run folder."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import sys
import warnings
from typing import Any, Iterable, Sequence
from unittest import mock

import numpy as np
import torch
from torch.utils.data import DataLoader

from hierclf.data.tta import View
from hierclf.errors import HierclfError, importable, option
from hierclf.models.spec import ModelSpec
from hierclf.predict.onnx_engine import run_batches, stage_graph

INSTALL = "pip install 'hierclf[openvino]'"


def openvino_core(command: str) -> Any:
    """An OpenVINO Core, after checking what tracing needs too (onnx, onnxscript), or one line
    naming `command` and how to install them."""
    for name in ("onnx", "onnxscript"):
        importable(name, command, INSTALL)
    return importable("openvino", command, INSTALL).Core()


def check_precision(core: Any, precision: str) -> None:
    """bf16 only where the CPU computes in it (OpenVINO's capabilities say BF16): elsewhere OpenVINO
    would emulate it, slower than f32; one line saying so."""
    if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        raise HierclfError(f"{option('precision')} bf16: this CPU has no bf16 units (OpenVINO reports "
                           f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}); use "
                           f"{option('precision')} f32")


def quantized_int8(model: Any, calibration: Iterable[np.ndarray]) -> Any:
    """`model` with OpenVINO's post-training int8 (NNCF's defaults for a CNN: symmetric weights per
    channel, activations calibrated on `calibration`'s images, one image at a time, as NNCF counts
    its subset), quiet: NNCF's progress bars and torch's CUDA note are not the user's."""
    for name in ("nncf", "torch.utils.cpp_extension"):
        logging.getLogger(name).setLevel(logging.ERROR)
    nncf = nncf_without_telemetry(f"predict {option('engine')} openvino {option('quantize')} int8")
    images = [image[None] for batch in calibration for image in batch]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nncf.quantize(model, nncf.Dataset(images), subset_size=len(images),
                             preset=nncf.QuantizationPreset.PERFORMANCE)


def nncf_without_telemetry(command: str) -> Any:
    """NNCF, imported so that it sends no usage statistics unless this user opted in (openvino's
    `opt_in_out --opt_in`): NNCF sends them to Google Analytics unless told not to, and a user of
    hierclf's int8 was never asked. Both switches are read once, at import: CI keeps the telemetry
    from writing a client id into the user's home, NNCF_CI replaces it by NNCF's stub; the
    environment is as it was afterwards."""
    as_it_is = "nncf" in sys.modules or _telemetry_accepted()  # imported already, or the user said yes
    with mock.patch.dict(os.environ, {} if as_it_is else {"CI": "true", "NNCF_CI": "1"}):
        return importable("nncf", command, INSTALL)


def _telemetry_accepted() -> bool:
    """Whether this user told OpenVINO's telemetry yes (its consent file says so)."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package: nothing would be sent
        return False
    return OptInChecker().check(enable_opt_in_dialog=False, disable_in_ci=True) == ConsentCheckResult.ACCEPTED


def converted(core: Any, graph: bytes, what: str) -> Any:
    """The ONNX graph as an OpenVINO model; where OpenVINO cannot convert an operator (its shape
    rules are stricter than onnxruntime's: a pooling window larger than its input, as a ResNet's
    last stage meets at a few pixels), one line naming them and `what` the graph holds."""
    try:
        return core.read_model(graph)
    except RuntimeError as error:
        failed = re.search(r"Conversion is failed for: ([^\n]+)", str(error))
        failed_ops = failed.group(1).strip() if failed else " ".join(str(error).split())[:200]
        raise HierclfError(f"OpenVINO cannot convert {what} ({failed_ops}); use onnxruntime or torch") from None


class OpenVinoVote:
    """One stage's fold vote compiled by OpenVINO for the CPU, its batch size free."""

    def __init__(self, models: Sequence[torch.nn.Module], spec: ModelSpec, views: Sequence[View], threads: int = 0,
                 precision: str = "f32", calibration: Iterable[np.ndarray] | None = None):
        """`precision` (f32 or bf16) for what is computed in float; with `calibration` (normalised
        batches of the run's images) the convolutions and matrix products run in int8."""
        self.device = torch.device("cpu")
        zoom_out = [view for view in views if view.name == "scale" and view.factor < 1]
        if zoom_out:
            raise HierclfError(f"{option('engine')} openvino: OpenVINO's antialiased resize, which the zoom-out view "
                               f"scale={zoom_out[0].factor:g} needs, differs from torch's (by up to a quarter of the "
                               f"pixel range, measured); use {option('engine')} onnxruntime or torch with it, or a "
                               f"scale of 1 or more")
        core = openvino_core(f"predict {option('engine')} openvino")
        check_precision(core, precision)
        model = converted(core, stage_graph(models, spec, views).SerializeToString(),
                          f"the {spec.arch} fold vote at {spec.img_size} px for {option('engine')} openvino")
        config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads

        def compiled(graph: Any) -> Any:
            return core.compile_model(graph, "CPU", config)

        self.float_compiled = compiled(model)
        self.compiled = self.float_compiled if calibration is None else compiled(quantized_int8(model, calibration))

    def in_float(self) -> "OpenVinoVote":
        """The same vote on the float graph compiled for it (an int8 vote's check compares the two)."""
        twin = copy.copy(self)
        twin.compiled = self.float_compiled
        return twin

    def __call__(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
        """Every row's probabilities and its index, as `soft_vote` returns them."""
        request = self.compiled.create_infer_request()
        return run_batches(loader, lambda batch: np.array(request.infer({"images": batch})[0]))
