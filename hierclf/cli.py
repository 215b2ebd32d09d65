"""The `hierclf` command. Errors a user can fix print one line and exit with code 2."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from hierclf.errors import HierclfError, user_message


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HierclfError as error:
            click.echo(f"hierclf: error: {user_message(error)}", err=True)
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
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


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

    if name == "digits":
        builtin.write_digits(out)
    else:
        builtin.write_fashion_mnist(out, source or builtin.FASHION_MNIST_DIR, train_limit, test_limit)
    click.echo(f"{name}: {out}/train.csv, {out}/test.csv")


@main.command("fit-coarse")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder to write.")
@click.option("--fold", type=click.IntRange(min=0), default=None, help="Train only this fold (folds can run on separate machines).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE", help="Override a recipe key (repeatable).")
def fit_coarse_command(recipe: Path, out: Path, fold: int | None, overrides: tuple[str, ...]) -> None:
    """Train the coarse model (the flat model when the recipe has no groups) on every fold."""
    from hierclf.metrics import report_text
    from hierclf.recipe import load_recipe
    from hierclf.runs import RunDir, read_npz
    from hierclf.train import fit_coarse

    summary = fit_coarse(load_recipe(recipe, overrides), out, only_fold=fold)
    if summary is None:
        click.echo(f"fold {fold} of {out} trained; run the other folds, then this command again for the summary")
        return
    oof = read_npz(RunDir(out).oof_path("coarse"))
    click.echo(f"\ncoarse out-of-fold ({summary['rows']} rows, {len(summary['folds'])} folds): "
               f"macro-F1 {summary['oof_macro_f1']:.4f}  accuracy {summary['oof_accuracy']:.4f}")
    for row in summary["folds"]:
        click.echo(f"  fold {row['fold']}: macro-F1 {row['val_macro_f1']:.4f}  accuracy {row['val_accuracy']:.4f}"
                   f"  (best epoch {row['best_epoch']} of {row['epochs_run']})")
    click.echo("\n" + report_text(oof["targets"], oof["probs"].argmax(1), summary["classes"]))


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="CSV to write: id,label[,prob_<class>…].")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="Image folder of an INPUT CSV (default: the folder named like the CSV, else the CSV's folder).")
@click.option("--probs", is_flag=True, help="Add one probability column per class.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
def predict(run: Path, input_path: Path, out: Path, images: Path | None, probs: bool, batch_size: int,
            workers: int, device: str) -> None:
    """Label INPUT (a folder of images, a CSV of ids, or a class-per-folder tree) with RUN's fold models."""
    from hierclf.data import load_input_items
    from hierclf.metrics import report_text, scores
    from hierclf.predict import predict_items, write_predictions
    from hierclf.runs import RunDir

    run_dir = RunDir(run)
    recipe, hierarchy = run_dir.recipe(), run_dir.hierarchy()
    items = load_input_items(input_path, hierarchy.class_names, recipe.data.id_column,
                             recipe.data.label_column, images)
    predictions = predict_items(run, items, batch_size=batch_size, workers=workers, device=device)
    write_predictions(out, predictions, with_probs=probs)
    click.echo(f"wrote {len(predictions.ids)} predictions to {out}")
    if predictions.has_targets:
        result = scores(predictions.targets, predictions.predicted, len(predictions.class_names))
        click.echo(f"\n{input_path}: macro-F1 {result['macro_f1']:.4f}  accuracy {result['accuracy']:.4f}")
        click.echo("\n" + report_text(predictions.targets, predictions.predicted, predictions.class_names))
