"""A stage across folds: every unfinished fold trained, then the folds' validation outputs
gathered into the stage's out-of-fold file and scored."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from hierclf.data import Items
from hierclf.data.cache import cached_items
from hierclf.errors import InUseError, RunError
from hierclf.hierarchy.stage import Stage, in_stage
from hierclf.metrics import bias_variance
from hierclf.run.files import write_json, write_npz
from hierclf.run.fold_files import read_result, read_val
from hierclf.run.folder import Run
from hierclf.run.locks import holding
from hierclf.runtime.devices import resolve_device, thread_count, torch_threads
from hierclf.runtime.processes import Placement, Processes
from hierclf.train.fold import train_fold
from hierclf.train.kfold import TRAIN_ONLY
from hierclf.train.auto import with_chosen_settings
from hierclf.train.record import RESUME

log = logging.getLogger(__name__)


NEXT = "next"
"""`--fold next`: claim the unfinished folds no other process holds, one after another."""


def train_stage(run: Run, stage: Stage, items: Items, only_fold: int | str | None = None,
                processes: Processes = Processes(), seconds_limit: float | None = None) -> dict[str, Any] | None:
    """Train every unfinished fold of `stage` (or only `only_fold`) in the run's folds; a finished
    fold (result.json present) is kept. With `only_fold = NEXT`, a fold another process holds is
    left to it, so workers started on several machines share the folds between them. Returns the
    out-of-fold summary once every fold is finished (the last worker gathers it), else None.

    Under torchrun (`processes`), they train each fold together; rank 0 reads which folds are
    finished, holds each fold's lock and writes the out-of-fold files. A fold whose epochs take
    longer than `seconds_limit` stops (`OverBudget`), resumable."""
    all_folds = _validated_folds(run)
    asked = all_folds if only_fold in (None, NEXT) else [only_fold]
    folds = processes.from_main(lambda: _unfinished(run, stage, asked))
    if folds:  # decode (and cache) only when some fold trains
        config = stage.config
        images = cached_items(items, config.img_size, config.in_chans, config.cache_mb, config.workers)
        placement = Placement(processes.device(resolve_device(config.device)), processes)
        with torch_threads(thread_count(config.threads)):
            stage = with_chosen_settings(run, stage, images, placement)  # "auto": once, before any fold
            for fold in folds:
                _train_held(run, stage, images, fold, placement, only_fold != NEXT, seconds_limit)
    return processes.from_main(lambda: gather_oof(run, stage, items))


def _validated_folds(run: Run) -> list[int]:
    return sorted(set(run.folds.fold.tolist()) - {TRAIN_ONLY})


def _unfinished(run: Run, stage: Stage, folds: list[int]) -> list[int]:
    finished = [fold for fold in folds if run.fold_finished(stage.name, fold)]
    for fold in finished:
        log.info("%s fold %d is already trained; keeping it", stage.name, fold)
        # a fit killed between writing result.json and removing the resume file left it behind
        (run.fold_dir(stage.name, fold) / RESUME).unlink(missing_ok=True)
    return [fold for fold in folds if fold not in finished]


def _train_held(run: Run, stage: Stage, items: Items, fold: int, placement: Placement, waits_for_others: bool,
                seconds_limit: float | None) -> None:
    """One fold, held by its lock; a fold another process holds is an error, or with `--fold
    next` (not `waits_for_others`) left to that process."""
    processes = placement.processes
    what = f"training {stage.name} fold {fold} of {run.root}"
    try:
        with processes.held_by_main(lambda: holding(run.fold_dir(stage.name, fold), what)):
            # another worker may have finished it meanwhile
            if not processes.from_main(lambda: run.fold_finished(stage.name, fold)):
                train_fold(run, stage, items, fold, placement, seconds_limit)
    except InUseError as error:
        if waits_for_others:
            raise
        log.info("%s; leaving it to that process", error)


def gather_oof(run: Run, stage: Stage, items: Items) -> dict[str, Any] | None:
    """Join every fold's predictions into oof.npz, in row order, and score the stage's own rows
    (the joint class, and with several output blocks each block) into summary.json."""
    fold_of_row, targets = run.folds.fold, stage.targets(items.labels)
    all_folds = _validated_folds(run)
    finished = run.finished_folds(stage.name)
    if any(fold not in finished for fold in all_folds):
        log.info("%s: %d of %d folds finished; the out-of-fold summary comes when all are",
                 stage.name, len([f for f in all_folds if f in finished]), len(all_folds))
        return None
    row_of_id = {image_id: row for row, image_id in enumerate(items.ids)}
    probs = np.zeros((len(items), stage.layout.width), dtype=np.float32)
    covered = np.zeros(len(items), dtype=np.int64)
    per_fold = []
    for fold in all_folds:
        folder = run.fold_dir(stage.name, fold)
        val = read_val(folder, stage.layout.width)
        rows = np.asarray([row_of_id.get(image_id, -1) for image_id in val["ids"]])
        if (rows < 0).any() or (fold_of_row[rows] != fold).any():
            raise RunError(f"{folder}/val.npz does not match this run's folds; the data changed since it was trained")
        probs[rows] = val["probs"]
        covered[rows] += 1
        per_fold.append(read_result(folder))
    validated = np.flatnonzero(fold_of_row != TRAIN_ONLY)
    if not (covered[validated] == 1).all():
        raise RunError(f"{run.stage_dir(stage.name)}: the folds' validation files do not cover every row once")
    scored = validated[in_stage(targets[validated])]
    oof_scores = stage.layout.scores(targets[scored], probs[scored])
    write_npz(run.oof_path(stage.name), ids=items.ids[validated], probs=probs[validated],
              targets=stage.layout.stored(targets[validated]), fold=fold_of_row[validated])
    summary = _summary(stage, len(scored), oof_scores, per_fold)
    write_json(run.summary_path(stage.name), summary)
    return summary


def _summary(stage: Stage, rows: int, oof_scores: dict[str, Any], per_fold: list[dict]) -> dict[str, Any]:
    summary = {"stage": stage.name, "rows": int(rows), "classes": list(stage.layout.output_names),
               "oof_accuracy": oof_scores["accuracy"], "oof_macro_f1": oof_scores["macro_f1"],
               "folds": [{key: fold[key] for key in ("fold", "best_epoch", "epochs_run", "val_accuracy",
                                                     "val_macro_f1", "train_macro_f1", "probe_macro_f1") if key in fold}
                         for fold in per_fold]}
    train_scores = [fold["train_macro_f1"] for fold in per_fold if "train_macro_f1" in fold]
    if len(train_scores) == len(per_fold):
        summary["train_macro_f1"] = float(np.mean(train_scores))
        summary["diagnosis"] = bias_variance(summary["train_macro_f1"], summary["oof_macro_f1"])
        log.info("%s: %s", stage.name, summary["diagnosis"])
    block_scores = oof_scores.get("heads", {})
    if block_scores:
        summary["heads"] = {block.name: {"size": block.size, "oof_accuracy": block_scores[block.name]["accuracy"],
                                         "oof_macro_f1": block_scores[block.name]["macro_f1"]}
                            for block in stage.layout.blocks}
    return summary
