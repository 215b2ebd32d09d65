"""The `hierclf predict` command (added to the CLI's group in `hierclf.cli`); imports stay inside
it, so the CLI starts without torch."""
from __future__ import annotations

from pathlib import Path

import click

from hierclf.options import parse_weights
from hierclf.predict.engine_names import ENGINES, PRECISIONS
from hierclf.recipe.combiners import COMBINER_NAMES


@click.command()
@click.argument("runs", metavar="RUN... INPUT", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("input_path", metavar="", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="CSV to write: id,label[,prob_<class>…].")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Image folder of an INPUT CSV (default: the folder named like the CSV, else the CSV's folder).")
@click.option("--ids-outside", is_flag=True,
              help="Let INPUT's ids leave the image folder (absolute, or climbing out with ..); refused by default.")
@click.option("--probs", is_flag=True, help="Add one probability column per class.")
@click.option("--index", "label_index", is_flag=True, help="Write the class index (0, 1, …) as the label, not its name.")
@click.option("--combiner", default=None, metavar="NAME",
              help=f"How stage outputs become labels: {', '.join(COMBINER_NAMES)}, as the run allows "
                   f"(default: the recipe's combine.method).")
@click.option("--trace", is_flag=True, help="Add each image's coarse decision and confidence, and its specialist's.")
@click.option("--tta", default=None, metavar="VARIANTS",
              help="Test-time augmentation, comma-separated: hflip, vflip, rot90, rot180, rot270, scale=F; "
                   "'none' turns off the recipe's predict.tta.")
@click.option("--weights", default=None, metavar="1,1,2", help="With several runs: each run's weight in the vote.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--engine", type=click.Choice(ENGINES), default="torch", show_default=True,
              help="What runs the fold models: torch, or on the CPU onnxruntime or openvino (each stage traced "
                   "into an ONNX graph in memory; pip install 'hierclf[export]' or 'hierclf[openvino]').")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="onnxruntime's or openvino's threads (0: one per core; at most 1024).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="f32", show_default=True,
              help="With --engine openvino: compute in bf16 where the CPU has it (AMX).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="With --engine onnxruntime or openvino: run the graphs in int8, calibrated on 256 of the run's "
                   "training images; refused if the pipeline loses over 0.3 macro-F1 points on 512 others.")
@click.option("--shard", default=None, metavar="I/N",
              help="Predict every N-th image from the I-th (0-based) into OUT.part-I-of-N; the shard that finds "
                   "every part written joins them into OUT in input order. Run the N shards anywhere; under "
                   "torchrun each process takes the shard of its rank.")
def predict(runs: tuple[Path, ...], input_path: Path, out: Path, images: Path | None, ids_outside: bool, probs: bool,
            label_index: bool, combiner: str | None, trace: bool, tta: str | None, weights: str | None,
            batch_size: int, workers: int, device: str, engine: str, threads: int, precision: str,
            quantize: str | None, shard: str | None) -> None:
    """Label INPUT (a folder of images, a CSV of ids, or a class-per-folder tree) with RUN's fold
    models; with several RUNs (seeds, backbones), their soft vote."""
    from hierclf.data import load_input_items
    from hierclf.data.tta import views_option
    from hierclf.predict.pipeline import Inference, predict_runs
    from hierclf.predict.shards import Shard, shard_origin, torchrun_shard, write_shard
    from hierclf.run.destinations import check_output, predict_inputs
    from hierclf.run.folder import Run

    check_output(out, "--out", reads=predict_inputs(runs, input_path, images))  # before any work
    part, device = torchrun_shard(None if shard is None else Shard.parse(shard), device)
    opened = [Run.open(run) for run in runs]
    recipe, hierarchy = opened[0].recipe, opened[0].hierarchy
    items = load_input_items(input_path, hierarchy.class_names, recipe.data.id_column, recipe.data.label_column,
                             images, hierarchy.label_heads, outside_allowed=ids_outside)
    views = views_option(tta)
    inference = Inference(batch_size=batch_size, workers=workers, device=device, tta=views, engine=engine,
                          threads=threads, quantize=quantize or "", precision=precision)
    if part is not None:
        origin = shard_origin(items, opened, combiner=combiner, trace=trace, tta=views, weights=weights, engine=engine,
                              quantize=quantize, precision=precision)
        items = part.rows(items)
    predictions = predict_runs(opened, items, parse_weights(weights), combiner=combiner, trace=trace,
                               inference=inference)
    click.echo(f"engine: {inference.described()}")
    if part is not None:
        joined = write_shard(out, part, predictions, origin, with_probs=probs, label_index=label_index)
        click.echo(f"wrote shard {part.index} of {part.count}: {len(predictions.ids)} predictions beside {out}")
        if joined:
            click.echo(f"every shard is written: joined them into {out}")
        return
    _echo_predictions(input_path, out, predictions, opened, probs, label_index,
                      {"combiner": opened[0].combiner(combiner),
                       "engine": inference.described(),
                       "tta": list(recipe.predict.tta if views is None else views)})


def _echo_predictions(input_path: Path, out: Path, predictions, runs, probs: bool, label_index: bool,
                      settings: dict) -> None:
    """Write the CSV and say what was written; where the input has labels, the scores, recorded
    in the run's scored.jsonl when one run predicted (`hierclf runs` shows them)."""
    from hierclf.metrics import scores
    from hierclf.predict.output import prediction_lines, write_predictions
    from hierclf.run.scored import SCORED, record_score

    write_predictions(out, predictions, with_probs=probs, label_index=label_index)
    result = scores(predictions.targets, predictions.labels, len(predictions.class_names)) \
        if predictions.has_targets else None
    click.echo("\n".join(prediction_lines(input_path, out, predictions, runs[0].hierarchy, result)))
    if result is not None and len(runs) == 1:
        entry = {"input": str(input_path), "rows": len(predictions.ids), **result, **settings}
        why = record_score(runs[0].root, entry)
        if why is not None:
            click.echo(f"(the score is not recorded: {why}, so {SCORED} stays as it was)")
