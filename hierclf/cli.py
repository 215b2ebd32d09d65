"""The `hierclf` command. Errors a user can fix print one line and exit with code 2."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from hierclf.errors import HierclfError, out_of_memory, user_message
from hierclf.export.command import export
from hierclf.predict.command import predict
from hierclf.report.runs_command import runs
from hierclf.options import FiniteRange, FoldChoice, parse_control, parse_seeds, spelling
from hierclf.runtime.launch import launched


def _launched_rank() -> int:
    """This process's rank among those torchrun started (0 without torchrun): rank 0 reports for all."""
    return launched().rank


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HierclfError as error:
            if not getattr(error, "mirrored", False):  # rank 0's own error, which rank 0 has reported
                rank = _launched_rank()
                shown = user_message(error, spelling(self, ctx))
                click.echo(f"hierclf: error: {f'rank {rank}: ' if rank else ''}{shown}", err=True)
            ctx.exit(2)
        except OSError as error:  # the machine refused a read or write the checks could not foresee
            where = f" ({error.filename})" if error.filename else ""
            click.echo(f"hierclf: error: {error.strerror or error}{where}", err=True)
            ctx.exit(2)
        except (MemoryError, RuntimeError) as error:
            if not out_of_memory(error):
                raise
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            click.echo(f"hierclf: error: memory ran out ({first}); lower batch_size, img_size, cache_mb or workers, "
                       f"or give the process more memory (a resumed command continues after the last finished epoch)",
                       err=True)
            ctx.exit(2)



@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-q", "--quiet", is_flag=True, help="Print results only, no per-epoch progress.")
@click.version_option(package_name="hierclf")
def main(quiet: bool) -> None:
    """Hierarchical two-stage image classification: a coarse model on merged classes,
    specialists per group, leakage-safe K-fold with out-of-fold scores."""
    logger = logging.getLogger("hierclf")
    for handler in [h for h in logger.handlers if h.get_name() == "hierclf-cli"]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)  # this invocation's stderr
    handler.set_name("hierclf-cli")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet or _launched_rank() else logging.INFO)


@main.command()
@click.argument("name", type=click.Choice(["digits", "fashion-mnist"]))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="fashion-mnist: folder of the idx files (default: Debian's /usr/share/datasets/fashion-mnist).")
@click.option("--train-limit", type=click.IntRange(min=0), default=0, help="Keep a stratified subset of the training rows.")
@click.option("--test-limit", type=click.IntRange(min=0), default=0, help="Keep a stratified subset of the test rows.")
def dataset(name: str, out: Path, source: Path | None, train_limit: int, test_limit: int) -> None:
    """Write a built-in dataset as OUT/train.csv + OUT/train/*.png and OUT/test.csv + OUT/test/*.png."""
    from hierclf.data import builtin
    from hierclf.run.destinations import check_output

    source = source or builtin.FASHION_MNIST_DIR
    check_output(out, "OUT", reads=[source] if name == "fashion-mnist" else [], folder=True)
    if name == "digits":
        builtin.write_digits(out)
    else:
        builtin.write_fashion_mnist(out, source, train_limit, test_limit)
    click.echo(f"{name}: {out}/train.csv, {out}/test.csv")


@main.command("import-weights")
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="The timm architecture the weights are of (as coarse.model names it).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The .safetensors file to write.")
def import_weights(src: Path, model: str, out: Path) -> None:
    """Convert SRC, weights of another port of MODEL (efficientnet_pytorch's, torchvision's, a
    notebook's), to timm's names: then a recipe's weights = "OUT" starts from them, offline."""
    from hierclf.models.factory import check_arch
    from hierclf.models.ports import convert_checkpoint
    from hierclf.run.destinations import check_output
    from hierclf.run.files import save_weights

    check_output(out, "--out", reads=[src])
    check_arch(model, "--model")
    converted = convert_checkpoint(src, model)
    save_weights(out, converted.tensors)
    click.echo(f"{len(converted.tensors)} tensors of {src}, matched to {model}'s names {converted.by}: {out}")
    if converted.left_out:
        click.echo(f"left out {model}'s classifier ({', '.join(converted.left_out)}): the checkpoint's is for another "
                   f"number of classes, and a recipe's stage trains its own head from these weights")


_FOLD = FoldChoice()
TENSORBOARD_HELP = ("Write TensorBoard event files into each fold's folder as it trains (the stage's "
                    "tensorboard key): tensorboard --logdir runs/. Needs pip install 'hierclf[tensorboard]'.")


@main.command("fit-coarse")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option("--fold", type=_FOLD, default=None, metavar="K|next",
              help="Train only fold K; or next: every unfinished fold no other process holds, so workers on "
                   "several machines sharing the run folder split the folds between them.")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe key (repeatable).")
@click.option("--seeds", default=None, metavar="0,1,2",
              help="Train one run per seed, OUT/seed-<n>, for an ensemble: predict OUT/seed-0 OUT/seed-1 … INPUT.")
@click.option("--tensorboard", is_flag=True, help=TENSORBOARD_HELP)
def fit_coarse_command(recipe: Path, out: Path, fold: int | None, overrides: tuple[str, ...],
                       seeds: str | None, tensorboard: bool) -> None:
    """Train the coarse model (the flat model when the recipe has no groups) on every fold."""
    from hierclf.recipe.reading import load_recipe

    loaded = load_recipe(recipe, overrides + (("coarse.tensorboard=true",) if tensorboard else ()))  # before torch
    from hierclf.train import fit_coarse

    runs = [(loaded, out)] if seeds is None else [(loaded.with_seed(seed), out / f"seed-{seed}")
                                                  for seed in parse_seeds(seeds)]
    for run_recipe, run_out in runs:
        summary = fit_coarse(run_recipe, run_out, only_fold=fold)
        if _launched_rank():
            continue
        if summary is None:
            if fold == "next":
                click.echo(f"the folds of {run_out} no other worker held are trained; the last worker to finish "
                           f"writes the summary (or run this command again)")
            else:
                click.echo(f"fold {fold} of {run_out} trained; run the other folds, then this command again for the "
                           f"summary")
            continue
        title = "coarse" if seeds is None else f"coarse, seed {run_recipe.coarse.seed} ({run_out})"
        _echo_stage_summary(title, summary, run_out)


@main.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="New folder for train.csv and train/.")
@click.option("--copies", type=click.IntRange(min=1), required=True, help="Augmented copies of each chosen image.")
@click.option("--classes", default=None, metavar="3,7",
              help="Classes to copy, by name or index, comma-separated (default: every class).")
@click.option("--augment", "preset", type=click.Choice(["light", "heavy", "document"]), default=None,
              help="Augmentation preset (default: the recipe's coarse.augment).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe key (repeatable).")
def augment(recipe: Path, out: Path, copies: int, classes: str | None, preset: str | None, seed: int,
            overrides: tuple[str, ...]) -> None:
    """Write augmented copies of RECIPE's training images, with a CSV whose group column keeps each
    copy in its original's fold: point data.csv at OUT/train.csv."""
    from hierclf.recipe.reading import load_recipe

    loaded = load_recipe(recipe, overrides)  # its mistakes refused before torch loads
    from hierclf.data import load_training_items
    from hierclf.data.offline import augment_dataset
    from hierclf.hierarchy.build import label_attributes
    from hierclf.run.destinations import check_output, recipe_inputs

    check_output(out, "--out", reads=[recipe, *recipe_inputs(loaded)], folder=True)
    items = load_training_items(loaded.data, label_attributes(loaded.hierarchy))
    data = loaded.data
    result = augment_dataset(items, out, copies, preset or loaded.coarse.augment, loaded.coarse.in_chans,
                             (data.id_column, data.label_column, data.group_column), classes, seed)
    click.echo(f"wrote {result['originals']} originals and {result['copies']} augmented copies "
               f"({result['classes']} classes) to {result['csv']}")
    click.echo(f"train on it with --set data.csv={result['csv']}: each copy's group is its original's, so "
               f"no fold splits them")


@main.command("fit-fine")
@click.argument("runs", metavar="RUN...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--group", default=None, help="Train only this group's specialist.")
@click.option("--fold", type=_FOLD, default=None, metavar="K|next", help="Train only fold K, or next (see fit-coarse).")
@click.option("--set", "overrides", multiple=True, metavar="fine.KEY=VALUE",
              help="Override a fine.* (or fine.GROUP.*) key of the run's recipe (repeatable).")
@click.option("--tensorboard", is_flag=True, help=TENSORBOARD_HELP)
def fit_fine_command(runs: tuple[Path, ...], group: str | None, fold: int | None, overrides: tuple[str, ...],
                     tensorboard: bool) -> None:
    """Train each group's specialist on that group's images, in the coarse stage's folds (in each
    RUN: the seed runs of an ensemble)."""
    for run in runs:
        _fit_fine_run(run, group, fold, overrides + (("fine.tensorboard=true",) if tensorboard else ()))


def _fit_fine_run(run: Path, group: str | None, fold: int | None, overrides: tuple[str, ...]) -> None:
    from hierclf.train import fit_fine

    summaries = fit_fine(run, group=group, only_fold=fold, overrides=overrides)
    if _launched_rank():
        return
    for name, summary in summaries.items():
        if summary is None:
            click.echo(f"{name}: fold {fold} trained; run the other folds (or let the other workers finish), "
                       f"then this command again for the summary")
        else:
            _echo_stage_summary(f"specialist {name!r}", summary, run)


def _echo_stage_summary(title: str, summary: dict, run: Path) -> None:
    from hierclf.report.text import stage_summary_lines
    from hierclf.run.folder import Run

    click.echo("\n".join(stage_summary_lines(title, summary, Run.open(run))))


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--against", type=click.Path(path_type=Path), default=None,
              help="A flat run on the same data and folds, scored beside this one (default: the run's "
                   "hierarchy.coarse_run, if it has one).")
@click.option("--control", "controls", multiple=True, metavar="RUN[,RUN…]",
              help="A budget-matched flat control: a flat run on the same folds (more epochs), or several "
                   "joined by commas (more seeds), scored as one ensemble out-of-fold. Repeatable.")
def evaluate(run: Path, against: Path | None, controls: tuple[str, ...]) -> None:
    """Score RUN's whole pipeline out-of-fold with every combiner, each with its training and
    inference cost, beside the flat run and any controls; write report.html (one page of it all),
    report.md, report.json, oof-predictions.csv, confusion.png and reliability.png into RUN."""
    from hierclf.report.evaluate import REPORT_FILES, evaluate_run
    from hierclf.report.text import evaluation_lines

    report = evaluate_run(run, against, [parse_control(control) for control in controls])
    click.echo("\n".join(evaluation_lines(report)))
    click.echo(f"wrote {run}/{REPORT_FILES[0]} (open it first), {', '.join(REPORT_FILES[1:])}")


@main.command("tune-fine")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--group", required=True, help="The group (or head) whose specialist to choose.")
@click.option("--try", "tries", multiple=True, required=True, metavar="KEY=V1,V2,…",
              help="A [fine.GROUP] key and the values to try, as img_size=40,48 (repeatable: every combination "
                   "is tried). Keys joined by + move together: model+weights=tf_efficientnet_lite2+lite2.safetensors "
                   "(a setting that names weights starts from them, not from the coarse model).")
@click.option("--fold", type=click.IntRange(min=0), default=0, show_default=True, help="The fold to train and score on.")
@click.option("--budget", type=FiniteRange(min=0.0, min_open=True), default=0.5, show_default=True,
              help="A setting's epochs may take at most this multiple of the seconds the coarse stage's fold "
                   "took; one that passes it stops there and is not chosen.")
@click.option("--combiner", default=None, help="The pipeline that scores a setting (default: combine.method).")
@click.option("--write", is_flag=True, help="Write the best setting into RUN's recipe and keep its trained fold "
                                          "(not when the flat model at the matched size scores as well).")
@click.option("--bar/--no-bar", default=None,
              help="Train the flat model on the fold at the size whose megapixels are the best setting's pipeline's, "
                   "and choose the specialist only if it beats that model beyond the noise (default: when the "
                   "coarse stage is a flat run).")
def tune_fine(run: Path, group: str, tries: tuple[str, ...], fold: int, budget: float, combiner: str | None,
              write: bool, bar: bool | None) -> None:
    """Train GROUP's specialist on one fold with each setting that fits the budget, and score
    each through the pipeline on that fold's rows; print the table and the best, against the
    flat model given the same megapixels."""
    from hierclf.tune.specialist import Search, tune_specialist

    tuning = tune_specialist(run, group, tries, Search(fold, budget, combiner, bar), write=write)
    click.echo("\n".join(tuning.lines()))


@main.command("suggest-groups")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--max-groups", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--min-confusion", type=FiniteRange(min=0.0, max=1.0, min_open=True), default=0.02,
              show_default=True, help="Mean mutual confusion rate two classes need to share a group.")
def suggest_groups_command(run: Path, max_groups: int, min_confusion: float) -> None:
    """Propose groups of confusable classes from a flat RUN's out-of-fold confusion matrix."""
    from hierclf.report.text import suggestion_lines

    click.echo("\n".join(suggestion_lines(run, max_groups, min_confusion)))


@main.command()
@click.argument("source", metavar="RUN|RECIPE", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The probe's run folder to write.")
@click.option("--c", "c", type=FiniteRange(min=0.0, min_open=True), default=None,
              help="Inverse regularisation strength of the logistic regression, on standardised features "
                   "(default: chosen in each fold by a 3-fold cross-validation inside its training rows).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Override a key of RECIPE (repeatable).")
def probe(source: Path, out: Path, c: float | None, overrides: tuple[str, ...]) -> None:
    """Fit the linear probe of a pretrained RUN (or RECIPE): a logistic regression on the frozen
    backbone's pooled features at the run's input size, on the same folds. It is written as a flat
    run, so `evaluate RUN --control OUT` scores it beside the run and `predict OUT` scores it on
    new images; a fine-tuned run that does not beat it has gone wrong."""
    if source.is_file():  # a recipe: its mistakes refused before torch loads
        from hierclf.recipe.reading import load_recipe
        load_recipe(source, overrides)
    from hierclf.report.text import stage_summary_lines
    from hierclf.run.folder import Run
    from hierclf.train.probe_run import linear_probe

    summary = linear_probe(source, out, c, overrides)
    click.echo("\n".join(stage_summary_lines("linear probe", summary, Run.open(out))))


main.add_command(export)
main.add_command(predict)
main.add_command(runs)
