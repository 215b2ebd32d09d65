"""`hierclf export --format openvino`: the run's whole prediction (the graph `hierclf export` writes
as ONNX, checked by onnxruntime first) converted to OpenVINO's IR, the .xml and .bin pair that
OpenVINO Model Server and `openvino.Core().read_model` load, compiled once more and checked by
OpenVINO against the torch module before either file is written. The metadata rides in the
model's runtime info under "hierclf". The weights stay f32: the server picks bf16 or f32 at
compile time (INFERENCE_PRECISION_HINT), so one file serves both."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hierclf.errors import HierclfError, option
from hierclf.export.graph import BuiltGraph
from hierclf.export.onnx_file import INPUT, OUTPUTS, Exported, checked_graph, quantized_and_checked, verify
from hierclf.predict.openvino_engine import converted, openvino_core, quantized_int8
from hierclf.run.folder import Run

SUFFIX = ".xml"


def export_openvino(run: Run, out: Path, combiner: str | None = None, folds: Sequence[int] | None = None,
                    tta: Sequence[str] | None = None, dynamo: bool = False, int8: bool = False) -> Exported:
    """Write `run`'s prediction to `out` (an .xml file; its weights beside it, the same name in
    .bin) as OpenVINO IR, checked by onnxruntime and by OpenVINO against the torch module; with
    `int8`, quantised by NNCF on some of the run's training images and refused beyond
    INT8_TOLERANCE on others, as predict's int8 is."""
    if out.suffix != SUFFIX:
        raise HierclfError(f"{option('out')} {out}: OpenVINO IR is an .xml file (its weights go beside it as .bin); "
                           f"name it {out.with_suffix(SUFFIX).name}")
    core = openvino_core(f"export {option('format')} openvino")
    import openvino

    built, _, metadata, payload = checked_graph(run, combiner, folds, tta, dynamo)
    sizes = ", ".join(f"{stage['name']} {stage['img_size']} px" for stage in built.about["stages"])
    model = converted(core, payload, f"{run.root}'s graph ({sizes}) for {option('format')} openvino")
    verify(built, _probs_by(core, model), "OpenVINO")
    if int8:
        model, metadata["quantized"] = _int8(core, run, built, model)
    for key, value in metadata.items():
        model.set_rt_info(value, ["hierclf", key])
    weights = out.with_suffix(".bin")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.stem}.") as folder:
        written = Path(folder) / out.name
        openvino.save_model(model, str(written), compress_to_fp16=False)
        os.replace(written.with_suffix(".bin"), weights)  # the weights first: an .xml is never without its .bin
        os.replace(written, out)
    return Exported(out, (out.stat().st_size + weights.stat().st_size) / 2**20, metadata, built.about)


def _probs_by(core: Any, model: Any) -> Any:
    """The probabilities OpenVINO computes for a uint8 batch, in f32."""
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda images: np.asarray(compiled(images)[OUTPUTS[0]])


def _int8(core: Any, run: Run, built: BuiltGraph, model: Any) -> tuple[Any, str]:
    """The IR in int8 by NNCF, checked as the ONNX file's int8 is (`quantized_and_checked`)."""
    def labels_by(graph: Any) -> Any:
        compiled = core.compile_model(graph, "CPU")
        return lambda batch: np.asarray(compiled({INPUT: batch})[OUTPUTS[1]])

    return quantized_and_checked(run, built, model, lambda batches: quantized_int8(model, batches), labels_by,
                                 "OpenVINO's NNCF post-training quantisation")
