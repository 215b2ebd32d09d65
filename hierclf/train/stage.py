"""Training a stage across folds into a run folder, and gathering its out-of-fold predictions."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hierclf.data import Items, load_training_items
from hierclf.data.cache import cached_items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.devices import resolve_device
from hierclf.errors import HierclfError, RecipeError, RunError
from hierclf.hierarchy import FactorHierarchy, Hierarchy, build_hierarchy
from hierclf.inference import soft_vote
from hierclf.metrics import bias_variance, output_scores
from hierclf.models import check_arch, create_model, load_weights_file, save_model
from hierclf.recipe import HeadConfig, Recipe, StageConfig, load_recipe, recipe_differences
from hierclf.runs import RunDir, read_json, read_npz, write_json, write_npz
from hierclf.train.kfold import TRAIN_ONLY, assign_folds
from hierclf.train.losses import build_stage_loss
from hierclf.train.loop import fit, seed_everything

log = logging.getLogger(__name__)

NOT_IN_STAGE = -1
"""Target of a row that a stage neither trains nor is scored on (a specialist's other classes)."""


HeadLosses = tuple[tuple[str, int, HeadConfig], ...]
"""(name, size, loss keys) of each attribute head of a stage; empty for one softmax."""


def fit_coarse(recipe: Recipe, out: str | Path, only_fold: int | None = None,
               items: Items | None = None) -> dict[str, Any] | None:
    """Train the coarse stage (the flat model when the hierarchy has no groups; one head per
    attribute with [hierarchy] heads) on every fold, or on `only_fold`. Rows come from the
    recipe's [data], or from `items` (in-memory arrays). Returns the out-of-fold summary once
    every fold is finished, else None."""
    items = load_training_items(recipe.data, recipe.hierarchy) if items is None else items
    if not items.has_labels:
        raise HierclfError("fit_coarse needs a label for every row")
    if recipe.hierarchy.heads:
        items = _name_joint_classes(items, FactorHierarchy.from_config(recipe.hierarchy.heads))
    hierarchy = build_hierarchy(recipe.hierarchy, items.class_names)
    check_arch(recipe.coarse.model, "coarse.model")
    _check_specialist_tables(recipe, hierarchy)
    fold_of_row = assign_folds(items.labels, items.fold_groups, recipe.folds, items.class_names)
    _check_fold(only_fold, fold_of_row)
    run = RunDir(out)
    run.prepare(recipe, hierarchy)
    _save_or_check_folds(run, items, fold_of_row)
    targets = hierarchy.coarse_targets(items.labels)
    heads: HeadLosses = ()
    if isinstance(hierarchy, FactorHierarchy):
        heads = tuple((head.name, head.size, recipe.head(head.name)) for head in hierarchy.heads)
    return train_stage(run, "coarse", recipe.coarse, items, targets, hierarchy.coarse_names, fold_of_row, only_fold,
                       heads=heads, separate=isinstance(hierarchy, FactorHierarchy) and hierarchy.separate)


def fit_fine(run_path: str | Path, group: str | None = None, only_fold: int | None = None,
             overrides: Sequence[str] = (), items: Items | None = None) -> dict[str, dict[str, Any] | None]:
    """Train the specialist of every group (or of `group`) on that group's rows only, in the
    coarse stage's folds, so their out-of-fold outputs compose with the coarse stage's. In a run
    with attribute heads, each head with a [fine.<head>] table gets a specialist trained on every
    row, whose probabilities replace that head's. `overrides` change fine.* keys of the run's
    recipe. Returns each specialist's OOF summary."""
    run = RunDir(run_path)
    recipe = run.recipe()
    if overrides:
        updated = load_recipe(run.recipe_path, overrides)
        changed = recipe_differences(recipe, updated)
        if changed:
            raise RecipeError(f"fit-fine --set may change fine.* and combine.* keys only, not {changed[0]}")
        recipe = updated
    hierarchy = run.hierarchy()
    if hierarchy.is_flat:
        raise RunError(f"{run.root} has no groups, so there is nothing for specialists to refine; "
                       f"set [hierarchy] groups and fit a new run")
    _check_specialist_tables(recipe, hierarchy)
    parts = hierarchy.specialist_parts(recipe.specialist_names)
    if isinstance(hierarchy, FactorHierarchy) and group in [head.name for head in hierarchy.heads] \
            and group not in [part.name for part in parts]:
        raise RecipeError(f"--group {group!r}: head {group!r} has no specialist; add a [fine.{group}] table to the "
                          f"recipe, or --set fine.{group}.img_size=… (any fine.{group}.* key)")
    if not parts:
        heads = ", ".join(head.name for head in hierarchy.heads)
        raise RecipeError(f"{run.root}: no head has a specialist; add a [fine.<head>] table (heads: {heads}) or "
                          f"--set fine.<head>.<key>=…")
    if group is not None and group not in [part.name for part in parts]:
        kind = "heads with a specialist" if isinstance(hierarchy, FactorHierarchy) else "groups"
        raise HierclfError(f"--group {group!r}: {kind} are {', '.join(part.name for part in parts)}")
    items = load_training_items(recipe.data, recipe.hierarchy) if items is None else items
    fold_of_row = _check_folds(run, items)
    _check_fold(only_fold, fold_of_row)
    chosen_groups = [part for part in parts if group is None or part.name == group]
    for chosen in chosen_groups:  # every check before anything is written
        check_arch(recipe.specialist(chosen.name).model, f"fine.{chosen.name}.model")
        run.check_stage(run.specialist_stage(chosen), recipe.specialist(chosen.name), f"fine.{chosen.name}")
    run.save_recipe(recipe)
    summaries = {}
    for chosen in chosen_groups:
        stage = recipe.specialist(chosen.name)
        stage_name = run.specialist_stage(chosen)
        run.bind_stage(stage_name, stage, f"fine.{chosen.name}")
        targets = hierarchy.specialist_targets(chosen, items.labels, NOT_IN_STAGE)
        summaries[chosen.name] = train_stage(run, stage_name, stage, items, targets,
                                             hierarchy.specialist_classes(chosen), fold_of_row, only_fold,
                                             coarse_prefix=_coarse_prefix(hierarchy, chosen.name))
    return summaries


def _name_joint_classes(items: Items, factors: FactorHierarchy) -> Items:
    """In-memory rows labelled by joint index (class names 0, 1, …) take the heads' class names."""
    plain = tuple(str(index) for index in range(len(items.class_names)))
    if items.class_names == plain and len(plain) <= factors.num_classes:
        return dataclasses.replace(items, class_names=factors.class_names)
    return items


def _coarse_prefix(hierarchy: Hierarchy, part: str) -> str:
    """Where a specialist's backbone sits in the coarse model's weights (for init_from_coarse)."""
    if not isinstance(hierarchy, FactorHierarchy):
        return ""
    return f"models.{part}." if hierarchy.separate else "backbone."


def train_stage(run: RunDir, stage_name: str, stage: StageConfig, items: Items, targets: np.ndarray,
                target_names: tuple[str, ...], fold_of_row: np.ndarray, only_fold: int | None = None,
                heads: HeadLosses = (), separate: bool = False, coarse_prefix: str = "") -> dict[str, Any] | None:
    """Train every unfinished fold of one stage; a finished fold (result.json present) is kept.
    Rows whose target is NOT_IN_STAGE are neither trained nor scored on, but each fold model
    still predicts them, so every row gets an out-of-fold output from every stage. With `heads`,
    the model has one output per attribute and `targets` one column per head."""
    all_folds = sorted(set(fold_of_row.tolist()) - {TRAIN_ONLY})
    device = resolve_device(stage.device)
    shapes = tuple((name, size) for name, size, _ in heads)
    folds = []
    for fold in ([only_fold] if only_fold is not None else all_folds):
        if run.fold_finished(stage_name, fold):
            log.info("%s fold %d is already trained; keeping it", stage_name, fold)
        else:
            folds.append(fold)
    if folds:  # decode (and cache) only when some fold trains
        images = cached_items(items, stage.img_size, stage.in_chans, stage.cache_mb, stage.workers)
    for fold in folds:
        _train_fold(run, stage_name, stage, images, targets, target_names, fold_of_row, fold, device, heads, shapes,
                    separate, coarse_prefix)
    return gather_oof(run, stage_name, items, targets, target_names, fold_of_row, shapes)


def _train_fold(run: RunDir, stage_name: str, stage: StageConfig, items: Items, targets: np.ndarray,
                target_names: tuple[str, ...], fold_of_row: np.ndarray, fold: int, device, heads: HeadLosses,
                shapes: tuple[tuple[str, int], ...], separate: bool, coarse_prefix: str) -> None:
    seed_everything(stage.seed + fold)
    key = stage_name.replace("/", ".")
    if stage.init_from_coarse:
        # the coarse model of this same fold never saw this fold's rows either: no leak
        coarse_weights = run.fold_dir("coarse", fold) / "weights.safetensors"
        if not coarse_weights.is_file():
            raise RunError(f"{key}.init_from_coarse: coarse fold {fold} of {run.root} is not trained")
        model, spec = create_model(dataclasses.replace(stage, pretrained=False), target_names, key=key)
        load_weights_file(model, coarse_weights, f"{key}.init_from_coarse", new_head=True, prefix=coarse_prefix)
    else:
        model, spec = create_model(stage, target_names, key=key, heads=shapes, separate=separate)
    in_stage = _in_stage(targets)
    train_rows = np.flatnonzero((fold_of_row != fold) & in_stage)
    val_rows = np.flatnonzero((fold_of_row == fold) & in_stage)
    other_rows = np.flatnonzero((fold_of_row == fold) & ~in_stage)

    def loader(rows: np.ndarray, training: bool):
        transform = build_transform(spec.img_size, spec.mean, spec.std, stage.augment if training else "none",
                                    seed=stage.seed + fold)
        dataset = ImageDataset(items.subset(rows), targets[rows], transform, spec.in_chans)
        # samplers balance the stage's classes; with heads, the joint classes
        classes = targets[rows] if targets.ndim == 1 else items.labels[rows]
        return make_loader(dataset, stage.batch_size, shuffle=training, workers=stage.workers, device=device,
                           seed=stage.seed + fold, drop_last=training and len(rows) > stage.batch_size,
                           sampler=stage.sampler, class_cap=stage.class_cap, sample_labels=classes)

    folder = run.fold_dir(stage_name, fold)
    log.info("%s fold %d: %d training rows, %d validation rows, %s on %s", stage_name, fold, len(train_rows),
             len(val_rows), stage.model, device)
    num_classes = int(np.prod([size for _, size in shapes])) if shapes else len(target_names)
    criterion = build_stage_loss(stage, targets[train_rows], num_classes, key, heads)
    result = fit(model, loader(train_rows, True), loader(val_rows, False), stage, device,
                 num_classes=num_classes, metrics_path=folder / "metrics.jsonl",
                 name=f"{stage_name} fold {fold}", criterion=criterion, heads=shapes)
    rows, probs = val_rows[result.val_rows], result.val_probs
    model.load_state_dict(result.best_state)
    # the kept model on its own training rows, unaugmented: the bias/variance diagnosis compares it
    train_probs, train_order = soft_vote([model], loader(train_rows, False), device, stage.amp, spec.head_sizes)
    train_scores = output_scores(targets[train_rows][train_order], train_probs, num_classes, shapes)
    if len(other_rows):
        other_probs, order = soft_vote([model], loader(other_rows, False), device, stage.amp, spec.head_sizes)
        rows, probs = np.concatenate([rows, other_rows[order]]), np.concatenate([probs, other_probs])
    write_npz(folder / "val.npz", ids=items.ids[rows], probs=probs, targets=targets[rows])
    save_model(folder, model, spec, result.best_state)
    best = result.history[result.best_epoch - 1]
    write_json(folder / "result.json", {
        "fold": fold, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "stopped_early": result.stopped_early, "monitor": stage.monitor, "best_value": result.best_value,
        "val_accuracy": best["val_accuracy"], "val_macro_f1": best["val_macro_f1"],
        "train_rows": int(len(train_rows)), "val_rows": int(len(val_rows)),
        "train_accuracy": train_scores["accuracy"], "train_macro_f1": train_scores["macro_f1"],
        **{name: value for name, value in best.items() if name.startswith("val_") and name != "val_loss"},
    })


def _in_stage(targets: np.ndarray) -> np.ndarray:
    """Rows a stage trains and is scored on (every head's target known, with heads)."""
    known = targets != NOT_IN_STAGE
    return known if known.ndim == 1 else known.all(1)


def gather_oof(run: RunDir, stage_name: str, items: Items, targets: np.ndarray, target_names: tuple[str, ...],
               fold_of_row: np.ndarray, heads: Sequence[tuple[str, int]] = ()) -> dict[str, Any] | None:
    """Join every fold's predictions into oof.npz, in row order, and score the stage's own rows
    (with attribute `heads`, the joint class and each head)."""
    all_folds = sorted(set(fold_of_row.tolist()) - {TRAIN_ONLY})
    finished = run.finished_folds(stage_name)
    if any(fold not in finished for fold in all_folds):
        log.info("%s: %d of %d folds finished; the out-of-fold summary comes when all are",
                 stage_name, len([f for f in all_folds if f in finished]), len(all_folds))
        return None
    row_of_id = {image_id: row for row, image_id in enumerate(items.ids)}
    probs = np.zeros((len(items), len(target_names)), dtype=np.float32)
    covered = np.zeros(len(items), dtype=np.int64)
    per_fold = []
    for fold in all_folds:
        folder = run.fold_dir(stage_name, fold)
        val = read_npz(folder / "val.npz")
        rows = np.asarray([row_of_id.get(image_id, -1) for image_id in val["ids"]])
        if (rows < 0).any() or (fold_of_row[rows] != fold).any():
            raise RunError(f"{folder}/val.npz does not match this run's folds; the data changed since it was trained")
        probs[rows] = val["probs"]
        covered[rows] += 1
        per_fold.append(read_json(folder / "result.json"))
    validated = np.flatnonzero(fold_of_row != TRAIN_ONLY)
    if not (covered[validated] == 1).all():
        raise RunError(f"{run.stage_dir(stage_name)}: the folds' validation files do not cover every row once")
    scored = validated[_in_stage(targets[validated])]
    num_classes = int(np.prod([size for _, size in heads])) if heads else len(target_names)
    oof_scores = output_scores(targets[scored], probs[scored], num_classes, heads)
    write_npz(run.oof_path(stage_name), ids=items.ids[validated], probs=probs[validated],
              targets=targets[validated], fold=fold_of_row[validated])
    summary = {"stage": stage_name, "rows": int(len(scored)), "classes": list(target_names),
               "oof_accuracy": oof_scores["accuracy"], "oof_macro_f1": oof_scores["macro_f1"],
               "folds": [{key: fold[key] for key in ("fold", "best_epoch", "epochs_run", "val_accuracy",
                                                     "val_macro_f1", "train_macro_f1") if key in fold}
                         for fold in per_fold]}
    train_scores = [fold["train_macro_f1"] for fold in per_fold if "train_macro_f1" in fold]
    if len(train_scores) == len(per_fold):
        summary["train_macro_f1"] = float(np.mean(train_scores))
        summary["diagnosis"] = bias_variance(summary["train_macro_f1"], summary["oof_macro_f1"])
        log.info("%s: %s", stage_name, summary["diagnosis"])
    if heads:
        summary["heads"] = {name: {"size": size, "oof_accuracy": oof_scores["heads"][name]["accuracy"],
                                   "oof_macro_f1": oof_scores["heads"][name]["macro_f1"]} for name, size in heads}
    write_json(run.summary_path(stage_name), summary)
    return summary


def _check_specialist_tables(recipe: Recipe, hierarchy: Hierarchy) -> None:
    if isinstance(hierarchy, FactorHierarchy):
        kind, names = "head", [head.name for head in hierarchy.heads]
    else:
        kind, names = "group", [group.name for group in hierarchy.groups]
    for name, _ in recipe.specialists:
        if name not in names:
            raise RecipeError(f"[fine.{name}]: there is no {kind} {name!r}; "
                              f"{kind}s are {', '.join(names) if names else '(none)'}")


def _check_fold(only_fold: int | None, fold_of_row: np.ndarray) -> None:
    if only_fold is not None and only_fold not in set(fold_of_row.tolist()) - {TRAIN_ONLY}:
        raise HierclfError(f"--fold {only_fold}: this run has folds 0..{fold_of_row.max()}")


def _check_folds(run: RunDir, items: Items) -> np.ndarray:
    """The run's fold of every row, after checking the data is the data the run was started on."""
    if not run.folds_path.exists():
        raise RunError(f"{run.root} has no folds.npz; run `hierclf fit-coarse` first")
    saved = read_npz(run.folds_path)
    same = all(name in saved and np.array_equal(saved[name], value)
               for name, value in (("ids", items.ids), ("labels", items.labels)))
    if not same:
        raise RunError(f"{run.root}: the training data changed since this run folder was made "
                       f"(other images or labels); use a new --out folder")
    return saved["fold"]


def _save_or_check_folds(run: RunDir, items: Items, fold_of_row: np.ndarray) -> None:
    """The fold of every row is fixed when the run starts; later stages and reruns must see the same."""
    if not run.folds_path.exists():
        write_npz(run.folds_path, ids=items.ids, labels=items.labels, fold=fold_of_row)
    elif not np.array_equal(_check_folds(run, items), fold_of_row):
        raise RunError(f"{run.root} was split into other folds; use a new --out folder")
