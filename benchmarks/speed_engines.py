"""predict's engines on a CPU, one stage's fold vote at a time: torch eager, torch with
channels_last, onnxruntime fp32 and int8, OpenVINO f32, bf16 and int8, on the same normalised batches already in
memory (decoding and resizing are the loader's, the same for every engine, and left out), at the
run's input size and at 224 px, batch 1 and 64, one and two threads. The engines alternate within
each setting, best of `--rounds`; each is printed as images/s and as a ratio to torch eager. Then
the whole pipeline's test macro-F1 by each engine (`predict_items`), int8 measured even where its
own check would refuse it (the check compares against 0.3 points). Each engine's start (tracing,
compiling, quantising) is timed apart: the images after which a faster engine has paid for it.

    python benchmarks/speed_engines.py runs/photos/clothing/flat data/clothing/test.csv
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from harness import benchmark_parser, best_rates
import hierclf.models.onnx_graph as onnx_graph
from hierclf import Inference, load_input_items, predict_items, Run, scores
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.predict.onnx_engine import OnnxVote, int8_rows
from hierclf.predict.openvino_engine import OpenVinoVote
from hierclf.predict.stage_models import StageModels
from hierclf.models.factory import model_from_spec
from hierclf.models.inference import vote
from hierclf.models.spec import ModelSpec


ENGINES = ("torch eager", "torch channels_last", "onnxruntime fp32", "onnxruntime int8", "openvino f32",
           "openvino bf16", "openvino int8")


def _started(starts: dict, name: str, make):
    """`make()`, its seconds kept in `starts` under `name`."""
    began = time.perf_counter()
    made = make()
    starts[name] = time.perf_counter() - began
    return made


def _openvino(vote: OpenVinoVote):
    request = vote.compiled.create_infer_request()
    return lambda batch: request.infer({"images": batch})


def _engines(models: list[torch.nn.Module], spec: ModelSpec, calibration: list[np.ndarray], threads: int,
             starts: dict) -> dict:
    """Each engine as a function of one normalised batch; each one's start in `starts`."""
    last = [model_from_spec(spec).eval() for _ in models]
    for copy, model in zip(last, models):
        copy.load_state_dict(model.state_dict())
        copy.to(memory_format=torch.channels_last)
    fp32 = _started(starts, "onnxruntime fp32", lambda: OnnxVote(models, spec, (), threads))
    int8 = _started(starts, "onnxruntime int8", lambda: OnnxVote(models, spec, (), threads, iter(calibration)))
    ov = {precision: _started(starts, f"openvino {precision}", lambda: OpenVinoVote(models, spec, (), threads, precision))
          for precision in ("f32", "bf16")}
    ov["int8"] = _started(starts, "openvino int8", lambda: OpenVinoVote(models, spec, (), threads, "f32",
                                                                        iter(calibration)))

    @torch.inference_mode()
    def eager(batch: np.ndarray) -> None:
        vote(models, torch.from_numpy(batch), spec.layout)

    @torch.inference_mode()
    def channels_last(batch: np.ndarray) -> None:
        vote(last, torch.from_numpy(batch).contiguous(memory_format=torch.channels_last), spec.layout)

    return {"torch eager": eager, "torch channels_last": channels_last,
            "onnxruntime fp32": lambda batch: fp32.session.run(["probs"], {"images": batch}),
            "onnxruntime int8": lambda batch: int8.session.run(["probs"], {"images": batch}),
            **{f"openvino {name}": _openvino(vote) for name, vote in ov.items()}}


def _speed(engines: dict, images: np.ndarray, batch: int, rounds: int) -> dict[str, float]:
    """Images per second of each engine over `images` in batches of `batch`, alternating, best of rounds."""
    chunks = [np.ascontiguousarray(images[start:start + batch]) for start in range(0, len(images), batch)]
    for run in engines.values():
        run(chunks[0])  # warm: first-call allocations and graph set-up
    return best_rates({name: (lambda run=run: [run(chunk) for chunk in chunks]) for name, run in engines.items()},
                      len(images), rounds)


def speed_table(run: Run, rows: int, rounds: int, sizes: list[int], thread_counts: list[int]) -> None:
    stage = StageModels(run, run.coarse_stage, torch.device("cpu"), inference=Inference(workers=0))
    calibration_items = int8_rows(run)[0]
    print("| size | batch | threads | " + " | ".join(ENGINES) + " |")
    print("| --- " * (3 + len(ENGINES)) + "|")
    starts = {}
    for size in sizes or (stage.spec.img_size, 224):
        spec = dataclasses.replace(stage.spec, img_size=size)
        dataset = ImageDataset(calibration_items, None, build_transform(size, spec.mean, spec.std), spec.in_chans)
        images = np.concatenate([batch.numpy() for batch, _, _ in make_loader(dataset, 64, workers=0,
                                                                              device=torch.device("cpu"))])
        calibration = [images[start:start + 32] for start in range(0, len(images), 32)]
        measured = np.resize(images, (rows,) + images.shape[1:])  # `rows` images, the calibration set repeated
        for threads in thread_counts:
            torch.set_num_threads(threads)
            engines = _engines(stage.models, spec, calibration, threads, starts)
            for batch in (1, 64):
                count = min(rows, 64) if batch == 1 else rows
                best = _speed(engines, measured[:count], batch, rounds)
                base = best["torch eager"]
                cells = [f"{value:.1f} ({value / base:.2f}×)" for value in best.values()]
                print(f"| {size} px | {batch} | {threads} | " + " | ".join(cells) + " |", flush=True)
        print("| start, s | | | " + " | ".join(f"{starts.get(name, 0.0):.1f}" for name in ENGINES) + " |", flush=True)


def accuracy_table(run: Run, test: Path) -> None:
    items = load_input_items(test, run.hierarchy.class_names)
    onnx_graph.INT8_TOLERANCE = float("inf")  # measured here, not refused
    count = len(run.hierarchy.class_names)
    print("\n| engine | test macro-F1 | test accuracy |\n| --- | --- | --- |")
    for name, inference in (("torch", Inference(workers=0, device="cpu")),
                            ("onnxruntime fp32", Inference(workers=0, device="cpu", engine="onnxruntime")),
                            ("onnxruntime int8", Inference(workers=0, device="cpu", engine="onnxruntime",
                                                           quantize="int8")),
                            *((f"openvino {precision}", Inference(workers=0, device="cpu", engine="openvino",
                                                                  precision=precision)) for precision in ("f32", "bf16")),
                            ("openvino int8", Inference(workers=0, device="cpu", engine="openvino", quantize="int8"))):
        result = scores(items.labels, predict_items(run, items, inference=inference).labels, count)
        print(f"| {name} | {result['macro_f1']:.4f} | {result['accuracy']:.4f} |", flush=True)


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("test", type=Path, help="a labelled CSV or class tree the run can predict")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("speed", "accuracy"), default=None, help="one of the two tables")
    parser.add_argument("--size", type=int, action="append", default=[], help="input sizes (default: the run's, 224)")
    parser.add_argument("--threads", type=int, action="append", default=[], help="thread counts (default: 1, 2)")
    args = parser.parse_args()
    run = Run.open(args.run)
    if args.only != "accuracy":
        speed_table(run, args.rows, args.rounds, args.size, args.threads or [1, 2])
    if args.only != "speed":
        accuracy_table(run, args.test)


if __name__ == "__main__":
    main()
