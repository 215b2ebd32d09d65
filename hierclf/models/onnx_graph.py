"""Torch modules as ONNX graphs for onnxruntime: the one tracer that `hierclf export` (a run's
whole prediction, to a file) and predict's onnxruntime engine (each stage's fold vote, in
memory) share, and the session a CPU runs them in."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from hierclf.errors import HierclfError, importable, option
from hierclf.metrics import scores
from hierclf.run.files import HOST
from hierclf.run.locks import process_running

log = logging.getLogger(__name__)

OPSET = 18
"""The ONNX opset of the TorchScript exporter: 18 resizes with antialiasing (a test-time zoom out)."""


def onnx_modules(command: str) -> tuple[Any, Any]:
    """onnx and onnxruntime (and onnxscript, which torch's exporter needs), or one line naming
    `command` and how to install them."""
    modules = []
    for name in ("onnx", "onnxruntime", "onnxscript"):  # torch's exporter imports onnxscript, and fails later
        modules.append(importable(name, command, "pip install 'hierclf[export]'"))
    return modules[0], modules[1]


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """File descriptor 1 sent to the null device: torch's TorchScript exporter turns its native
    ONNX log on at every export and leaves it on (its `setup_onnx_logging` tests a function for
    truth), so an operator it lacks prints the whole graph, thousands of lines, straight to fd 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def traced(module: torch.nn.Module, sample: torch.Tensor, input_name: str, output_names: Sequence[str],
           free_axes: Mapping[int, str], dynamo: bool = False) -> Any:
    """`module` as an ONNX ModelProto, its input's `free_axes` (by name: {0: "batch"}) and every
    output's first left free: by the TorchScript exporter, as timm exports its models, or by torch.export where asked
    (`dynamo`) or where the former lacks an operator (the antialiased resize of a zoom out)."""
    import onnx

    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):  # the exporters print their progress
        if not dynamo:
            buffer = io.BytesIO()
            axes = {input_name: dict(free_axes), **{name: {0: free_axes[0]} for name in output_names}}
            try:
                with warnings.catch_warnings(), _native_stdout_silenced():
                    warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*legacy TorchScript")
                    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # each stage's size is fixed
                    torch.onnx.export(module, (sample,), buffer, dynamo=False, opset_version=OPSET,
                                      input_names=[input_name], output_names=list(output_names), dynamic_axes=axes)
                return onnx.load_from_string(buffer.getvalue())
            except torch.onnx.errors.UnsupportedOperatorError as error:
                log.info("the TorchScript exporter lacks an operator (%s); tracing with torch.export instead",
                         " ".join(str(error).split())[:120])
        free = torch.export.Dim.DYNAMIC
        program = torch.onnx.export(module, (sample,), dynamo=True, input_names=[input_name],
                                    output_names=list(output_names),
                                    dynamic_shapes=({axis: free for axis in free_axes},))
        return program.model_proto


def cpu_session(payload: bytes, threads: int = 0) -> Any:
    """An onnxruntime session on the CPU with every graph optimisation, `threads` intra-op
    threads (0: onnxruntime's choice, one per core) and operators run in sequence (a fold vote
    is a chain: parallel execution only adds scheduling)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # its warnings about unused initialisers are not the user's
    return onnxruntime.InferenceSession(payload, options, providers=["CPUExecutionProvider"])


INT8_TOLERANCE = 0.3
"""The most macro-F1 points an int8 graph may lose against its float one on the run's rows."""


def quantized_int8(proto: Any, calibration: Iterable[np.ndarray], input_name: str) -> bytes:
    """`proto` with its convolutions and matrix products in int8 (onnxruntime's static
    quantisation, QDQ, weights per output channel, activations calibrated by min-max on
    `calibration`, the batches of its input): what a CPU with VNNI runs fastest."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    sweep_int8_folders()
    with tempfile.TemporaryDirectory(prefix=f"{INT8_PREFIX}{HOST}-{os.getpid()}-") as folder:
        plain, prepared, quantized = (Path(folder) / name for name in ("plain.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(proto, plain)
        within = tempfile.tempdir
        tempfile.tempdir = folder  # onnxruntime's own temporary files (ort.quant.*) go in here too
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)  # the free axes defeat it
                quantize_static(str(prepared), str(quantized), Batches(), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                op_types_to_quantize=["Conv", "Gemm", "MatMul"])
        finally:
            tempfile.tempdir = within
        return quantized.read_bytes()


INT8_PREFIX = "hierclf-int8-"
"""The temporary folder int8 quantisation works in: hierclf-int8-<host>-<pid>-<random>."""


def sweep_int8_folders() -> list[Path]:
    """Delete the folders quantisations killed on this machine left in the temporary folder (a
    process killed with -9 runs no clean-up): theirs are named by a pid that no longer runs."""
    swept = []
    for folder in Path(tempfile.gettempdir()).glob(f"{INT8_PREFIX}{HOST}-*-*"):
        pid = folder.name[len(INT8_PREFIX) + len(HOST) + 1:].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder)
    return swept


def checked_int8(targets: np.ndarray, class_count: int, labels: Callable[[bool], np.ndarray],
                 where: str) -> tuple[float, float]:
    """The one check of an int8 graph, whatever serves it (predict's stages, export's file): the
    labels of the same rows of the run's own images from the float graph and from the int8 one
    (`labels(quantised)`), macro-F1 each against `targets`, refused when int8 loses more than
    INT8_TOLERANCE points, with the figures. Returns (float, int8) macro-F1."""
    float_f1, int8_f1 = (scores(targets, labels(quantised), class_count)["macro_f1"] for quantised in (False, True))
    lost = (float_f1 - int8_f1) * 100
    if lost > INT8_TOLERANCE:
        raise HierclfError(f"{where}: the int8 graph scores macro-F1 {int8_f1:.4f} against the float graph's "
                           f"{float_f1:.4f} on {len(targets)} of the run's training images, {lost:.2f} points lost "
                           f"(more than {INT8_TOLERANCE}); use the float graph (leave {option('quantize')} out)")
    return float_f1, int8_f1
