"""Training arithmetic on this CPU: a fine-tuning step of the recipe's model (EfficientNet-Lite0
from its ImageNet weights file) in fp32 and in bf16 autocast (`precision = "bf16"`), each in
torch's default memory layout and in channels_last (`channels_last = true`), through hierclf's
`fit` and through the bare loop a user would write with the same settings.

Both loops train one epoch of the same rows (the recipe's photos, decoded once at the size into
memory, as `cache_mb` keeps them) from the same weights, with AdamW and cross entropy at the
recipe's batch size, then validate once in fp32 (as `fit` does: bf16 is for the steps only). The
variants alternate, several rounds each, and each one's best images per second is printed with
its ratio to the bare fp32 loop's, and `fit`'s to the bare loop's in the same variant: this
machine is shared, so only ratios measured in one process mean anything. Run it on one core
(`OMP_NUM_THREADS=1 taskset -c 0`), or on two with `OMP_NUM_THREADS=2`.

    python benchmarks/speed_precision.py recipes/clothing.toml --rows 480 --size 96 --size 128
    python benchmarks/speed_precision.py recipes/clothing.toml --rows 160 --size 128 \
        --set coarse.model=resnet50 --set coarse.weights=''        # another backbone, from scratch
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging

import numpy as np
import timm
import torch

from harness import benchmark_parser, best_rates, markdown_table, recipe_of
from hierclf import fit, HeadConfig, load_training_items, OutputLayout, Placement, StageConfig
from hierclf.data.cache import cached_items
from hierclf.data.dataset import build_transform, ImageDataset, make_loader, TrainingOrder
from hierclf.train.losses import build_layout_loss

VARIANTS = {"fp32": ("fp32", False), "fp32 channels_last": ("fp32", True), "bf16": ("bf16", False),
            "bf16 channels_last": ("bf16", True)}


def bare_epoch(model: torch.nn.Module, train: torch.utils.data.DataLoader, val: torch.utils.data.DataLoader,
               stage: StageConfig) -> None:
    """The hand-written loop: one epoch of AdamW steps under the variant's autocast and layout, then
    an fp32 pass over the validation rows."""
    layout = torch.channels_last if stage.channels_last else torch.contiguous_format
    model.to(memory_format=layout).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=stage.lr, weight_decay=stage.weight_decay)
    precision = (torch.autocast("cpu", dtype=torch.bfloat16) if stage.precision == "bf16"
                 else contextlib.nullcontext())
    for images, targets, _ in train:
        optimizer.zero_grad(set_to_none=True)
        with precision:
            logits = model(images.to(memory_format=layout))
        torch.nn.functional.cross_entropy(logits.float(), targets[:, 0]).backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        for images, _, _ in val:
            model(images.to(memory_format=layout)).argmax(1)


def main() -> None:
    parser = benchmark_parser(__doc__, recipe=True, out=True)
    parser.add_argument("--rows", type=int, default=480, help="photos used: four fifths train, one fifth validate")
    parser.add_argument("--size", type=int, action="append", help="image size(s); the recipe's by default")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    recipe = recipe_of(args.recipe, args.overrides)
    base = recipe.coarse
    items = load_training_items(recipe.data, check_files=False)
    items = items.subset(np.arange(min(args.rows, len(items.labels))))
    rows = np.arange(len(items.labels))
    train_rows, val_rows = rows[rows % 5 != 0], rows[rows % 5 == 0]
    names = list(items.class_names)
    loss = build_layout_loss(OutputLayout.single(names), [HeadConfig()], ["coarse"], items.labels[train_rows, None])
    pretrained = (timm.create_model(base.model, num_classes=len(names), pretrained=True,
                                    pretrained_cfg_overlay={"file": str(base.weights)}) if base.weights
                  else timm.create_model(base.model, num_classes=len(names)))
    initial, normalised = pretrained.state_dict(), timm.data.resolve_model_data_config(pretrained)
    table, results = [], {}
    for size in args.size or [base.img_size]:
        pixels = cached_items(items, size, 3, budget_mb=4096)

        def loader(stage: StageConfig, rows: np.ndarray, training: bool) -> torch.utils.data.DataLoader:
            dataset = ImageDataset(pixels.subset(rows), items.labels[rows, None],
                                   build_transform(size, normalised["mean"], normalised["std"]), 3)
            return make_loader(dataset, stage.batch_size, workers=0, device=torch.device("cpu"),
                               order=TrainingOrder(drop_last=True) if training else None)

        def work(variant: str, bare: bool):
            precision, channels_last = VARIANTS[variant]
            stage = dataclasses.replace(base, img_size=size, epochs=1, scheduler="none", warmup_epochs=0,
                                        workers=0, precision=precision, channels_last=channels_last,
                                        freeze_epochs=0, head_init="zero", batchnorm="train", lr=1e-3)

            def run() -> None:
                model = timm.create_model(stage.model, num_classes=len(names))
                model.load_state_dict(initial)
                train, val = loader(stage, train_rows, True), loader(stage, val_rows, False)
                if bare:
                    bare_epoch(model, train, val, stage)
                else:
                    fit(model, train, val, stage, loss, Placement())
            return run

        works = {(variant, loop): work(variant, loop == "bare") for variant in VARIANTS for loop in ("bare", "fit")}
        seen = len(train_rows) // base.batch_size * base.batch_size
        rates = best_rates({f"{v}/{l}": w for (v, l), w in works.items()}, seen, args.rounds)
        reference = rates["fp32/bare"]
        for variant in VARIANTS:
            bare, fitted = rates[f"{variant}/bare"], rates[f"{variant}/fit"]
            table.append([size, variant, f"{bare:.1f}", f"{bare / reference:.2f}", f"{fitted:.1f}",
                          f"{fitted / reference:.2f}", f"{fitted / bare:.2f}"])
            print(*table[-1], sep=" | ", flush=True)
        results[size] = rates
    print(markdown_table(["px", "variant", "bare img/s", "bare × fp32", "fit img/s", "fit × bare fp32",
                          "fit / bare"], table))
    print(f"({base.model}, batch {base.batch_size}, {len(train_rows)} training and {len(val_rows)} validation rows, "
          f"{torch.get_num_threads()} threads, best of {args.rounds}; images/s count the training rows of the epoch, "
          f"validation included in its time)")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                        "images_per_second": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
