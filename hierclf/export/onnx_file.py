"""`hierclf export`: a run's whole prediction as one ONNX file that onnxruntime serves without
hierclf or torch. The graph takes a batch of uint8 images of any size and count and returns the
combined probabilities and labels; the file's metadata names the classes and says how the graph
resizes and normalises. Before the file is written, onnxruntime runs it on test images and its
outputs must match the torch module's: a file that predicts otherwise is never written."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from hierclf import __version__
from hierclf.errors import HierclfError, option
from hierclf.export.graph import BuiltGraph, build_graph
from hierclf.models.onnx_graph import checked_int8, cpu_session, onnx_modules, quantized_int8, traced
from hierclf.predict.onnx_engine import int8_rows, pixel_batches
from hierclf.run.files import atomic_path
from hierclf.run.folder import Run

INPUT, OUTPUTS = "images", ("probs", "labels")
ONE_FILE = 2**31 - 2**24
"""Protocol buffers, which an ONNX file is, hold under 2 GB; the graph's own nodes take the rest."""
TOLERANCE = 1e-3
"""The largest difference in any probability allowed between onnxruntime and the torch module on
the random images of the check. Random pixels drive a model's logits far beyond real images', so
float rounding (onnxruntime's convolutions are not torch's) reaches 2e-4 there; a graph that
computes something else differs by tenths. On real images the two agree to 1e-4 (the tests)."""


@dataclass(frozen=True)
class Exported:
    """What was written: the file, its size, the metadata it carries, and what the graph holds
    (`BuiltGraph.about`)."""

    path: Path
    megabytes: float
    metadata: dict[str, str]
    about: dict[str, Any]


def export_onnx(run: Run, out: Path, combiner: str | None = None, folds: Sequence[int] | None = None,
                tta: Sequence[str] | None = None, dynamo: bool = False, int8: bool = False) -> Exported:
    """Write `run`'s prediction (its combiner or `combiner`, every finished fold or `folds`, the
    recipe's test-time views or `tta`) to `out` as one ONNX graph, checked by onnx's checker and
    by onnxruntime against the torch module before it is written.

    The graph is traced by torch's TorchScript exporter, as timm exports its models: the
    torch.export-based one (`dynamo`) took twelve times as long on the benchmarks' six Lite0
    models (docs/serving.md); onnxruntime checks the file whichever wrote it.

    Args:
        run: the run folder, opened.
        out: the .onnx file to write (atomically; nothing is written when a check fails).
        combiner, folds, tta: as `predict_items` takes them (None: the recipe's, every finished fold).
        dynamo: trace with torch.export instead of TorchScript.
        int8: quantise, calibrated on the run's training images and checked against the float graph.

    Returns:
        What was written (`Exported`: the file, its size, its metadata, what the graph holds)."""
    onnx, _ = onnx_modules("hierclf export")
    built, model, metadata, payload = checked_graph(run, combiner, folds, tta, dynamo)
    if int8:
        quantized, metadata["quantized"] = _int8(run, built, model, payload)
        onnx.helper.set_model_props(quantized, metadata)
        payload = quantized.SerializeToString()
    with atomic_path(out) as temporary:
        temporary.write_bytes(payload)
    return Exported(out, len(payload) / 2**20, metadata, built.about)


def checked_graph(run: Run, combiner: str | None, folds: Sequence[int] | None, tta: Sequence[str] | None,
                  dynamo: bool) -> tuple[BuiltGraph, Any, dict[str, str], bytes]:
    """The run's prediction as a float ONNX graph carrying its metadata, checked by onnx's checker
    and by onnxruntime against the torch module: the module, the ModelProto, the metadata and the
    serialised graph. Every export format starts from it."""
    import onnx

    built = build_graph(run, combiner, folds, tta)
    weights = sum(tensor.numel() * tensor.element_size() for tensor in built.module.state_dict().values())
    if weights >= ONE_FILE:
        raise HierclfError(f"{run.root}: its models hold {weights / 2**30:.1f} GB of weights, more than one ONNX "
                           f"file holds (2 GB); export fewer fold models ({option('folds')})")
    try:
        model = _traced(built, dynamo)
    except Exception as error:  # the exporter's own errors are of many kinds; none is the user's to fix
        first = " ".join(str(error).split())[:300]
        raise HierclfError(f"{run.root}: the graph could not be exported to ONNX ({type(error).__name__}: "
                           f"{first})") from None
    metadata = _metadata(run, built)
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    payload = model.SerializeToString()
    verify(built, lambda images: cpu_session(payload).run([OUTPUTS[0]], {INPUT: images})[0], "onnxruntime")
    return built, model, metadata, payload


def _traced(built: BuiltGraph, dynamo: bool) -> Any:
    """The module as an ONNX ModelProto with the batch, height and width of its input free."""
    return traced(built.module, images_of(built, 2, seed=0), INPUT, OUTPUTS, {0: "batch", 1: "height", 2: "width"}, dynamo)


def _int8(run: Run, built: BuiltGraph, model: Any, payload: bytes) -> tuple[Any, str]:
    """The graph in int8 by onnxruntime's static quantisation, checked (`quantized_and_checked`)."""
    import onnx

    def labels_by(graph: bytes) -> Callable[[np.ndarray], np.ndarray]:
        session = cpu_session(graph)
        return lambda batch: session.run([OUTPUTS[1]], {INPUT: batch})[0]

    quantized, note = quantized_and_checked(run, built, payload, lambda batches: quantized_int8(model, batches, INPUT),
                                            labels_by, "onnxruntime's static quantisation, QDQ, per channel")
    return onnx.load_from_string(quantized), note


def quantized_and_checked(run: Run, built: BuiltGraph, float_graph: Any,
                          quantize: Callable[[Iterator[np.ndarray]], Any],
                          labels_by: Callable[[Any], Callable[[np.ndarray], np.ndarray]], method: str) -> tuple[Any, str]:
    """Any export format's int8: the graph `quantize`d on some of the run's training images at
    exact_input_size (uint8 batches), the labels of the float and the int8 graph (`labels_by` a
    graph: a function of a batch) compared on others by the one int8 check; the int8 graph, and
    what the check measured, for the metadata."""
    calibration, check = int8_rows(run)
    side, channels = built.about["exact_input_size"], built.channels
    quantized = quantize(pixel_batches(calibration, side, channels))
    batches = list(pixel_batches(check, side, channels))
    labels = {False: labels_by(float_graph), True: labels_by(quantized)}
    float_f1, int8_f1 = checked_int8(check.labels, len(built.about["classes"]), lambda int8: np.concatenate(
        [labels[int8](batch) for batch in batches]), f"export {option('quantize')} int8")
    return quantized, (f"int8 ({method}, calibrated on {len(calibration)} training images): macro-F1 {int8_f1:.4f} "
                       f"against the float graph's {float_f1:.4f} on {len(check)} others")


def images_of(built: BuiltGraph, count: int, seed: int, size: int | None = None) -> torch.Tensor:
    """Random uint8 images at the coarse stage's input size (or `size`), N×H×W×C."""
    side = size or built.about["stages"][0]["img_size"]
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, side, side, built.channels), dtype=torch.uint8, generator=generator)


def verify(built: BuiltGraph, probs_of: Callable[[np.ndarray], np.ndarray], engine: str) -> None:
    """`engine`'s probabilities (`probs_of` a uint8 batch) against the torch module's, on batches of
    1 and 3, at the input size and at another: any further apart than TOLERANCE refuses the file."""
    side = built.about["stages"][0]["img_size"]
    for count, size, seed in ((1, side, 1), (3, side, 2), (3, side + 7, 3)):
        images = images_of(built, count, seed, size)
        with torch.no_grad():
            expected = built.module(images)[0].numpy()
        gap = float(np.abs(probs_of(images.numpy()) - expected).max())
        if not gap <= TOLERANCE:
            raise HierclfError(f"the exported graph's probabilities by {engine} differ from the run's by {gap:.2g} on "
                               f"{count} images of {size} px (more than {TOLERANCE:g}); nothing was written")


def _metadata(run: Run, built: BuiltGraph) -> dict[str, str]:
    """What a server reads from the file: classes, input, outputs, and each stage as exported."""
    about = built.about
    channels = {1: "grey", 3: "RGB", 4: "RGBA"}.get(built.channels, f"{built.channels} channels")
    return {
        "hierclf_version": __version__,
        "run": str(run.root.resolve().name),
        "classes": json.dumps(about["classes"], ensure_ascii=False),
        "input": (f"{INPUT}: uint8, N×H×W×{built.channels} ({channels}; rows, columns, channels as decoded), any "
                  f"N, H, W. Each stage resizes to its img_size bilinearly (half-pixel centres, OpenCV's "
                  f"INTER_LINEAR, as hierclf's loader), rounds to whole levels, then normalises "
                  f"(x - 255*mean) / (255*std) with its mean and std. Images of exact_input_size px (the least "
                  f"multiple of every stage's size: each resize is then exact in both) give hierclf predict's "
                  f"outputs; at other sizes OpenCV's fixed-point resize differs from the graph's by a level on "
                  f"about a tenth of the pixels."),
        "exact_input_size": str(about["exact_input_size"]),
        "outputs": (f"{OUTPUTS[0]}: float32, N×{len(about['classes'])}, each row sums to 1; {OUTPUTS[1]}: int64, N, "
                    f"an index into classes."),
        "combiner": about["combiner"],
        "tta": json.dumps(about["views"]),
        "stages": json.dumps(about["stages"]),
        **({"note": "routed is computed as in hierclf, but every specialist runs on every image (the routed "
                    "combiner's saving needs data-dependent execution, which a graph has not)"}
           if about["combiner"] == "routed" else {}),
    }
