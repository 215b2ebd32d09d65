"""`lr = "auto"`: the peak learning rate chosen on the stage's own data, once per stage, before its
folds train. No one rate fits every set (the fine-tuning grid's best ranges from 3e-4 to 4e-3 over
four sets, and LP-FT's head, started at the probe, wants less than a zero head does), and a user
who copies a recipe's rate to new data is guessing.

The choice is a few short runs: from the rates of a ladder (three to start, one more beyond an
edge while the best sits at it), each trains the stage as its recipe says, for two epochs with the
recipe's warm-up (at most one) and decay, on two thirds of fold 0's training rows, and is scored
by `monitor` on the last third. No validation row of fold 0 is used, and the split keeps groups
and byte-identical copies on one side. The best rate (on ties, the lower) is written with every
trial to STAGE/lr.json, which every fold then reads: a resumed run, or another worker, never
chooses again."""
from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from hierclf.data import Items
from hierclf.errors import DataError, RecipeError
from hierclf.hierarchy.stage import Stage, in_stage
from hierclf.readback import ReadBack
from hierclf.recipe.finetuning import AUTO, FIRST_RATES, RATE_LADDERS
from hierclf.recipe.schema import FoldsConfig
from hierclf.run.files import read_json, write_json
from hierclf.run.folder import Run
from hierclf.run.locks import holding
from hierclf.runtime.processes import Placement
from hierclf.seeding import derive_seed
from hierclf.train.fold import FoldLoaders, build_fold_model, starting_probe
from hierclf.train.kfold import split_rows
from hierclf.train.loop import fit
from hierclf.train.losses import build_layout_loss
from hierclf.train.record import FitRecord

log = logging.getLogger(__name__)

EXTENSIONS = 2
"""At most this many rates beyond the first three, one at a time past the edge the best sits at."""
TRIAL_EPOCHS = 2
FILE = "lr.json"


def with_chosen_rate(run: Run, stage: Stage, items: Items, placement: Placement) -> Stage:
    """`stage` with its rate as chosen (read from its lr.json, or measured and written there) when
    its recipe says lr = "auto"; as it is otherwise. Rank 0 holds the choice's lock and writes it."""
    if stage.config.lr != AUTO:
        return stage
    path = run.stage_dir(stage.name) / FILE
    processes = placement.processes
    with processes.held_by_main(lambda: holding(path.parent, f"choosing the rate of {stage.name}", lock=".lr.lock")):
        chosen = processes.from_main(lambda: read_rate(path) if path.exists() else None)
        if chosen is None:
            choice = _choose(run, stage, items, placement)
            processes.from_main(lambda: write_json(path, choice))
            chosen = choice["lr"]
        else:
            log.info("%s: lr = \"auto\" chose %g before (%s)", stage.name, chosen, path)
    return dataclasses.replace(stage, config=dataclasses.replace(stage.config, lr=chosen))


def read_rate(path) -> float:
    """The rate a stage's lr.json holds, checked."""
    check = ReadBack(str(path), "delete it to choose the rate again")
    return check.number(check.field(check.table(read_json(path), "the file"), "lr"), "lr", gt=0.0, hi=10.0)


def _choose(run: Run, stage: Stage, items: Items, placement: Placement) -> dict:
    """The trials, walked up or down the ladder, and the choice with every trial's figures."""
    config = stage.config
    family = "sgd" if config.optimizer == "sgd" else "adam"
    ladder, rows = RATE_LADDERS[family], _trial_rows(run, stage, items)
    scores: dict[float, float] = {}
    started = time.perf_counter()
    for rate in FIRST_RATES[family]:
        scores[rate] = _trial(run, stage, items, rate, rows, placement)
    for _ in range(EXTENSIONS):
        best = _best(scores, config.monitor)
        tried = sorted(scores)
        step = -1 if best == tried[0] else 1 if best == tried[-1] else 0
        index = ladder.index(best) + step
        if not step or not 0 <= index < len(ladder):
            break
        scores[ladder[index]] = _trial(run, stage, items, ladder[index], rows, placement)
    chosen, seconds = _best(scores, config.monitor), time.perf_counter() - started
    shown = ", ".join(f"{rate:g} {scores[rate]:.4f}" for rate in sorted(scores))
    log.info("%s: lr = \"auto\" chose %g: %s %.4f after %d epochs on %d rows of fold 0's training rows, scored on "
             "the other %d (%s); %d trials, %.0f s", stage.name, chosen, config.monitor, scores[chosen], TRIAL_EPOCHS,
             len(rows[0]), len(rows[1]), shown, len(scores), seconds)
    return {"lr": chosen, "monitor": config.monitor, "epochs": TRIAL_EPOCHS, "train_rows": int(len(rows[0])),
            "val_rows": int(len(rows[1])), "trials": {f"{rate:g}": scores[rate] for rate in sorted(scores)},
            "seconds": seconds}


def _best(scores: dict[float, float], monitor: str) -> float:
    """The best rate by `monitor` (a loss: the lowest); on ties the lowest rate."""
    sign = 1 if monitor.endswith("loss") else -1
    return min(scores, key=lambda rate: (sign * scores[rate], rate))


def _trial_rows(run: Run, stage: Stage, items: Items) -> tuple[np.ndarray, np.ndarray]:
    """Fold 0's training rows of the stage, split in three as the run's folds are (stratified,
    groups and copies on one side): two thirds to train a trial, one to score it."""
    targets = stage.targets(items.labels)
    rows = np.flatnonzero((run.folds.fold != 0) & (run.folds.fold >= 0) & in_stage(targets))
    try:
        inner = split_rows(items.subset(rows), FoldsConfig(count=3, seed=run.recipe.folds.seed),
                           f"{stage.key}.lr = \"auto\"")
    except DataError as error:
        raise RecipeError(f"{stage.key}.lr = \"auto\" splits fold 0's training rows in three to choose the rate: "
                          f"{error}; set {stage.key}.lr") from None
    return rows[inner != 0], rows[inner == 0]


def _trial(run: Run, stage: Stage, items: Items, rate: float, rows: tuple[np.ndarray, np.ndarray],
           placement: Placement) -> float:
    """The stage trained at `rate` for TRIAL_EPOCHS as its recipe says (its head started as it
    would be), no files written: its best trained epoch's `monitor`."""
    config = dataclasses.replace(stage.config, lr=rate, epochs=TRIAL_EPOCHS, freeze_epochs=0, patience=0,
                                 warmup_epochs=min(1, stage.config.warmup_epochs), tensorboard=False)
    trial = dataclasses.replace(stage, config=config)
    seed = config.seed
    model, spec = build_fold_model(run, trial, 0, seed)
    targets = stage.targets(items.labels)
    loaders = FoldLoaders(trial, spec, items, targets, seed, placement)
    if config.head_init == "probe":
        starting_probe(trial, model, loaders, rows)
    criterion = build_layout_loss(trial.layout, trial.losses, trial.loss_keys, targets[rows[0]])
    result = fit(model, loaders.of(rows[0], training=True), loaders.of(rows[1]), config, criterion, placement,
                 seed=derive_seed(seed, 1), record=FitRecord(f"{stage.name} lr {rate:g}"))
    values = [entry[config.monitor] for entry in result.history]
    return min(values) if config.monitor.endswith("loss") else max(values)
