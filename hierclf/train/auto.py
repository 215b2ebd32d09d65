"""`lr = "auto"` and `batchnorm = "auto"`: the peak learning rate, and whether batch normalisation
keeps its loaded statistics, chosen on the stage's own data, once per stage, before its folds
train. No one setting fits every set: on photos of what ImageNet knows, BatchNorm's statistics
kept as loaded and a low rate serve best, and on grey 48 px clothes or small faces the same
setting collapses the network, which needs batch statistics and a higher rate
(docs/benchmarks.md, "Fine-tuning fitted to the data"). A user who copies a recipe's settings to
new data is guessing.

The choice is a few short runs. For each BatchNorm mode asked for, from the rates of a ladder
(three to start, one more beyond an edge while the best sits at it; the recipe's own rate alone
when lr is a number), each trains the stage as its recipe says, on two thirds of fold 0's
training rows, and is scored by `monitor` on the last third: no validation row of fold 0 is used,
and the split keeps groups and byte-identical copies on one side. A trial keeps the recipe's
epochs, warm-up and decay, so its schedule has the run's shape, but each epoch draws a share of
the rows (anew each epoch) so that the trial sees them TRIAL_PASSES times in all: two epochs of
two, one of them warming up, favoured what learns fastest at first (kept statistics at a low
rate), not what ends best (on faces, batch statistics at a high rate). The best (on ties, the lower rate, then batch statistics) is
written with every trial to STAGE/auto.json, which every fold then reads: a resumed run, or
another worker, never chooses again."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np

from hierclf.data import Items
from hierclf.errors import DataError, RecipeError
from hierclf.hierarchy.stage import Stage, in_stage
from hierclf.readback import ReadBack
from hierclf.recipe.finetuning import AUTO, FIRST_RATES, RATE_LADDERS
from hierclf.recipe.schema import FoldsConfig, StageConfig, lower_is_better
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
TRIAL_PASSES = 2
"""How many times a trial sees its training rows, over the recipe's epochs."""
FILE = "auto.json"
MODES = ("train", "frozen")
"""BatchNorm's modes, in the order ties go."""


def with_chosen_settings(run: Run, stage: Stage, items: Items, placement: Placement) -> Stage:
    """`stage` with its rate and BatchNorm mode as chosen (read from its auto.json, or measured and
    written there) where its recipe says "auto"; as it is otherwise. Rank 0 holds the choice's
    lock and writes it."""
    config = stage.config
    if config.lr != AUTO and config.batchnorm != AUTO:
        return stage
    path = run.stage_dir(stage.name) / FILE
    processes = placement.processes
    with processes.held_by_main(lambda: holding(path.parent, f"choosing {stage.name}'s settings", lock=".auto.lock")):
        chosen = processes.from_main(lambda: read_choice(path) if path.exists() else None)
        if chosen is None:
            choice = _choose(run, stage, items, placement)
            processes.from_main(lambda: write_json(path, choice))
            chosen = {"lr": choice["lr"], "batchnorm": choice["batchnorm"]}
        else:
            log.info("%s: \"auto\" chose lr %g, batchnorm %s before (%s)", stage.name, chosen["lr"],
                     chosen["batchnorm"], path)
    return dataclasses.replace(stage, config=dataclasses.replace(config, **chosen))


def read_choice(path: Path) -> dict:
    """The rate and mode a stage's auto.json holds, checked."""
    check = ReadBack(str(path), "delete it to choose again")
    table = check.table(read_json(path), "the file")
    batchnorm = check.text(check.field(table, "batchnorm"), "batchnorm")
    if batchnorm not in MODES:
        check.fail(f"batchnorm is {batchnorm!r}, not one of {', '.join(MODES)}")
    return {"lr": check.number(check.field(table, "lr"), "lr", gt=0.0, hi=10.0), "batchnorm": batchnorm}


def _choose(run: Run, stage: Stage, items: Items, placement: Placement) -> dict:
    """Every trial, each mode's rates walked along the ladder, and the choice."""
    config = stage.config
    modes = MODES if config.batchnorm == AUTO else (config.batchnorm,)
    started = time.perf_counter()
    try:
        rows = _trial_rows(run, stage, items)
    except DataError as error:
        if config.lr == AUTO:
            raise RecipeError(f"{stage.key}: lr = \"auto\" splits fold 0's training rows in three to choose the rate: "
                              f"{error}; set lr in [{stage.key}]") from None
        log.warning("%s: batchnorm \"auto\" keeps batch statistics (\"train\"), untried: fold 0's training rows are "
                    "too few to split in three and choose (%s)", stage.name, error)
        return {"lr": config.lr, "batchnorm": "train", "monitor": config.monitor, "untried": str(error),
                "trials": [], "seconds": time.perf_counter() - started}
    scores: dict[tuple[str, float], float] = {}
    for mode in modes:
        tried = _walk(config, lambda rate, mode=mode: _trial(run, stage, items, (mode, rate), rows, placement))
        scores.update({(mode, rate): value for rate, value in tried.items()})
    mode, rate = _best(scores, config.monitor)
    seconds = time.perf_counter() - started
    shown = ", ".join(f"{each_mode} {each_rate:g} {value:.4f}"
                      for (each_mode, each_rate), value in sorted(scores.items()))
    log.info("%s: \"auto\" chose lr %g, batchnorm %s: %s %.4f after %d passes over %d rows of fold 0's training "
             "rows, scored on the other %d (%s); %d trials, %.0f s", stage.name, rate, mode, config.monitor,
             scores[(mode, rate)], TRIAL_PASSES, len(rows[0]), len(rows[1]), shown, len(scores), seconds)
    return {"lr": rate, "batchnorm": mode, "monitor": config.monitor, "passes": TRIAL_PASSES,
            "train_rows": int(len(rows[0])), "val_rows": int(len(rows[1])),
            "trials": [{"batchnorm": each_mode, "lr": each_rate, config.monitor: value}
                       for (each_mode, each_rate), value in sorted(scores.items())], "seconds": seconds}


def _walk(config: StageConfig, score: Callable[[float], float]) -> dict[float, float]:
    """Each rate tried for one mode, and its score: the recipe's own where it is a number; else the
    first three of the ladder, then one at a time beyond the edge the best sits at (at most
    EXTENSIONS)."""
    if config.lr != AUTO:
        return {config.lr: score(config.lr)}
    family = "sgd" if config.optimizer == "sgd" else "adam"
    ladder = RATE_LADDERS[family]
    tried = {rate: score(rate) for rate in FIRST_RATES[family]}
    for _ in range(EXTENSIONS):
        best = _best({("", rate): value for rate, value in tried.items()}, config.monitor)[1]
        step = -1 if best == min(tried) else 1 if best == max(tried) else 0
        index = ladder.index(best) + step
        if not step or not 0 <= index < len(ladder):
            break
        tried[ladder[index]] = score(ladder[index])
    return tried


def _best(scores: dict[tuple[str, float], float], monitor: str) -> tuple[str, float]:
    """The best (mode, rate) by `monitor` (a loss: the lowest); on ties the lower rate, then batch
    statistics."""
    sign = 1 if lower_is_better(monitor) else -1
    return min(scores, key=lambda key: (sign * scores[key], key[1], MODES.index(key[0]) if key[0] in MODES else 0))


def _trial_rows(run: Run, stage: Stage, items: Items) -> tuple[np.ndarray, np.ndarray]:
    """Fold 0's training rows of the stage, split in three as the run's folds are (stratified,
    groups and copies on one side): two thirds to train a trial, one to score it. A class with
    under three rows there (and its rows' groups) trains every trial and is scored by none. A
    DataError where too few rows are left to split."""
    targets = stage.targets(items.labels)
    rows = np.flatnonzero((run.folds.fold != 0) & (run.folds.fold >= 0) & in_stage(targets))
    labels, groups = items.labels[rows], items.fold_groups[rows]
    classes, counts = np.unique(labels, return_counts=True)
    rare = np.isin(groups, groups[np.isin(labels, classes[counts < 3])])
    scored = rows[~rare]
    inner = split_rows(items.subset(scored), FoldsConfig(count=3, seed=run.recipe.folds.seed), f"{stage.key}: \"auto\"")
    return np.sort(np.concatenate([rows[rare], scored[inner != 0]])), scored[inner == 0]


def _trial(run: Run, stage: Stage, items: Items, setting: tuple[str, float], rows: tuple[np.ndarray, np.ndarray],
           placement: Placement) -> float:
    """The stage trained with `setting` (BatchNorm's mode, the rate) as its recipe says (its head
    started as it would be, its epochs each a share of the rows), no files written: its best
    trained epoch's `monitor`."""
    mode, rate = setting
    config = dataclasses.replace(stage.config, lr=rate, batchnorm=mode, patience=0, tensorboard=False)
    trial = dataclasses.replace(stage, config=config)
    model, spec = build_fold_model(run, trial, 0, config.seed)
    targets = stage.targets(items.labels)
    loaders = FoldLoaders(trial, spec, items, targets, config.seed, placement)
    if config.head_init == "probe":
        starting_probe(trial, model, loaders, rows)
    criterion = build_layout_loss(trial.layout, trial.losses, trial.loss_keys, targets[rows[0]])
    share = min(1.0, TRIAL_PASSES / config.epochs)
    result = fit(model, loaders.of(rows[0], training=True, share=share), loaders.of(rows[1]), config, criterion,
                 placement, seed=derive_seed(config.seed, 1),
                 record=FitRecord(f"{stage.name} trial batchnorm {mode}, lr {rate:g}"))
    values = [entry[config.monitor] for entry in result.history]
    return min(values) if lower_is_better(config.monitor) else max(values)
