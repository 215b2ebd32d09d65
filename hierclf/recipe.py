"""Recipes: a TOML file becomes typed, frozen config objects, every key checked where it enters.

Each config class lists its keys as dataclass fields; a field's metadata carries its
documentation and its bounds, so validation, error messages and the docs' key reference
all come from one place.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import operator
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import tomli_w

from hierclf.errors import RecipeError


def _key(default: Any, doc: str, *, lo: float | None = None, hi: float | None = None,
         gt: float | None = None, lt: float | None = None, path: bool = False,
         runtime: bool = False) -> Any:
    """A recipe key. `path` keys resolve against the recipe's folder; `runtime` keys
    (workers, device) change how a run executes, not what it learns."""
    metadata = dict(doc=doc, lo=lo, hi=hi, gt=gt, lt=lt, path=path, runtime=runtime)
    if isinstance(default, dict):  # a table-valued key; a dataclass default must not be shared
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled training images are."""

    csv: str = _key("", "CSV with one row per image: id, label and optionally a group column.", path=True)
    images: str = _key("", "Folder holding the CSV's images. Default: the folder named like the CSV "
                           "beside it (train/ for train.csv), else the CSV's own folder.", path=True)
    folder: str = _key("", "A class-per-folder tree (folder/CLASS/IMAGE), instead of csv.", path=True)
    mask_images: str = _key("", "The face-mask competition's folder, instead of csv: <person-id>_<gender>_<race>_<age>/"
                                "{mask1..mask5,incorrect_mask,normal}.<ext>. Rows get mask, gender and age "
                                "(binned by age_bounds); the person id is the fold group.", path=True)
    age_bounds: tuple[int, ...] = _key((30, 60), "mask_images: the ages where a new age bin starts "
                                                 "(30, 60: <30, 30–59, ≥60).")
    id_column: str = _key("id", "CSV column holding the image id: a file name, with or without extension.")
    label_column: str = _key("label", "CSV column holding the label: a class index or a class name.")
    group_column: str = _key("group", "CSV column whose rows must stay on one side of every split "
                                      "(augmented copies, photos of one person). Used when present.")
    class_names: tuple[str, ...] = _key((), "Class names in index order. Default: the label values "
                                            "(sorted names, or 0..max for integer labels).")


@dataclass(frozen=True)
class FoldsConfig:
    """How rows are split for K-fold training and out-of-fold scoring."""

    count: int = _key(5, "Number of folds; 1 is a single stratified hold-out split.", lo=1, hi=100)
    holdout: float = _key(0.2, "Validation fraction when count = 1.", gt=0.0, lt=1.0)
    seed: int = _key(0, "Seed of the fold assignment.", lo=0)


@dataclass(frozen=True)
class HierarchyConfig:
    """Which classes the coarse stage merges; no groups trains a flat classifier."""

    groups: tuple[tuple[Union[int, str], ...], ...] = _key(
        (), "Groups of confusable classes, by index or name: [[3, 7, 14]]. Each becomes one coarse class.")
    group_names: tuple[str, ...] = _key((), "Names of the groups, in order. Default: member names joined by '+'.")
    heads: dict[str, Union[int, tuple[str, ...]]] = _key(
        {}, "Factorised labels instead of groups: one coarse head per attribute, in order, each a size or "
            "its value names: { mask = 3, gender = 2, age = 3 }. The label is the mixed-radix number "
            "(mask·6 + gender·3 + age).")
    separate: bool = _key(False, "heads: one model per attribute instead of one backbone with a head each.")


Optimizer = Literal["adamw", "adam", "sgd"]
Scheduler = Literal["cosine", "cosine_restarts", "step", "plateau", "none"]
Monitor = Literal["val_macro_f1", "val_accuracy", "val_loss", "train_loss", "train_accuracy"]


LossName = Literal["cross_entropy", "focal"]
AugmentPreset = Literal["none", "light", "heavy", "document"]
Augment = Union[AugmentPreset, tuple[dict[str, Any], ...]]
TTA_TRANSFORMS = ("hflip", "vflip", "rot90", "rot180", "rot270")
ClassWeights = Union[Literal["none", "balanced"], tuple[float, ...]]


@dataclass(frozen=True)
class LossConfig:
    """The loss of one output: a stage's, or one attribute head's."""

    loss: LossName = _key("cross_entropy", "cross_entropy, or focal: cross entropy scaled by (1 − p)^focal_gamma, "
                                           "so easy examples count less.")
    focal_gamma: float = _key(2.0, "focal: how much easy examples are down-weighted; 0 is cross entropy.", lo=0.0)
    class_weights: ClassWeights = _key("none", "Per-class loss weights: none, balanced (inverse class frequency "
                                               "in the training rows), or one number per class.")
    label_smoothing: float = _key(0.0, "Label smoothing of the cross entropy.", lo=0.0, lt=1.0)


@dataclass(frozen=True)
class StageConfig(LossConfig):
    """Every training key of one stage (coarse or a specialist): model, optimisation, stopping."""

    model: str = _key("resnet18", "timm architecture name (timm.list_models()).")
    pretrained: bool = _key(False, "Download timm's pretrained weights (needs network).")
    weights: str = _key("", "Local .safetensors or .pth weights to start from; a head of another "
                            "size is left out and trained anew.", path=True)
    init_from_coarse: bool = _key(False, "Specialists only: start each fold's specialist from the coarse model "
                                         "of the same fold (leak-free: neither saw that fold), with a new head.")
    img_size: int = _key(224, "Side of the square network input, pixels.", lo=8, hi=4096)
    in_chans: int = _key(3, "Input channels: 3 (RGB) or 1 (greyscale).", lo=1, hi=3)
    drop_rate: float = _key(0.0, "Dropout before the classifier.", lo=0.0, lt=1.0)
    epochs: int = _key(10, "Maximum number of epochs.", lo=1, hi=100000)
    batch_size: int = _key(32, "Images per forward pass.", lo=1, hi=65536)
    accumulate: int = _key(1, "Batches whose gradients add up before each optimiser step: the step sees "
                              "batch_size × accumulate images, in the memory of one batch.", lo=1, hi=4096)
    clip_grad: float = _key(0.0, "Clip gradients before each step (timm's dispatch_clip_grad); 0 does not clip.",
                            lo=0.0)
    clip_mode: Literal["norm", "value", "agc"] = _key("norm", "clip_grad: total norm, each value, or adaptive "
                                                              "(AGC, relative to each weight's norm).")
    optimizer: Optimizer = _key("adamw", "Optimiser (timm.optim.create_optimizer_v2).")
    lr: float = _key(1e-3, "Peak learning rate.", gt=0.0, lt=10.0)
    weight_decay: float = _key(1e-4, "Weight decay.", lo=0.0, lt=1.0)
    momentum: float = _key(0.9, "Momentum of sgd (Nesterov); 0 is plain SGD.", lo=0.0, lt=1.0)
    scheduler: Scheduler = _key("cosine", "Learning-rate schedule, stepped once per epoch (timm.scheduler).")
    warmup_epochs: int = _key(0, "Epochs of linear warm-up from warmup_lr.", lo=0)
    warmup_lr: float = _key(1e-6, "Learning rate at the start of warm-up.", lo=0.0)
    min_lr: float = _key(1e-6, "Floor of cosine schedules and plateau decay (eta_min).", lo=0.0)
    restart_epochs: int = _key(10, "cosine_restarts: length of the first cycle (T_0).", lo=1)
    restart_mult: float = _key(2.0, "cosine_restarts: growth of each next cycle (T_mult).", lo=1.0)
    step_epochs: int = _key(30, "step: epochs between decays.", lo=1)
    decay_rate: float = _key(0.1, "step and plateau: factor applied at each decay.", gt=0.0, hi=1.0)
    plateau_patience: int = _key(3, "plateau: epochs without improvement before a decay.", lo=0)
    amp: bool = _key(True, "Mixed precision on CUDA (bf16 where supported, else fp16 with scaling).")
    monitor: Monitor = _key("val_macro_f1", "Logged metric that picks the best epoch and drives early stopping.")
    patience: int = _key(0, "Stop after this many epochs without improvement of monitor; 0 never stops early.", lo=0)
    min_delta: float = _key(0.0, "Smallest change of monitor that counts as an improvement.", lo=0.0)
    augment: Augment = _key("none", "Training augmentation (albumentations): a preset (light: small shifts, "
                                    "rotations and lighting; heavy: flips, affine, colour, blur or noise, dropout; "
                                    "document: what scans and phone photos of pages show: 90° turns, small "
                                    "rotations, perspective, blur, noise, lighting, compression), or a list of "
                                    "transforms with their arguments: [{ name = \"HorizontalFlip\", p = 0.5 }].")
    mixup_alpha: float = _key(0.0, "Mixup (timm): blend pairs of images and their labels by λ ~ Beta(α, α); "
                                   "0 is off. Composes with label_smoothing.", lo=0.0)
    cutmix_alpha: float = _key(0.0, "CutMix (timm): paste a box of one image into another, labels mixed by area; "
                                    "0 is off.", lo=0.0)
    mix_prob: float = _key(1.0, "mixup/cutmix: probability that a batch is mixed.", lo=0.0, hi=1.0)
    mix_switch_prob: float = _key(0.5, "With both mixup_alpha and cutmix_alpha: probability of CutMix for a mixed "
                                       "batch.", lo=0.0, hi=1.0)
    sampler: Literal["shuffle", "balanced"] = _key("shuffle", "Order of training rows: shuffle each epoch, or "
                                                              "balanced: draw classes equally often (with "
                                                              "replacement, WeightedRandomSampler).")
    class_cap: int = _key(0, "At most this many rows of each class per epoch, drawn anew each epoch (with balanced: "
                             "the epoch draws class_cap per class); 0 is no cap.", lo=0)
    ema: bool = _key(False, "Keep an exponential moving average of the weights (timm's ModelEmaV3); it is what "
                            "is validated and saved.")
    ema_decay: float = _key(0.999, "ema: decay per optimiser step.", gt=0.0, lt=1.0)
    ema_warmup: bool = _key(True, "ema: let the decay grow from 0 to ema_decay over the first steps, so the "
                                  "average does not drag in the untrained start.")
    freeze_epochs: int = _key(0, "Train only the classifier head(s) for this many first epochs: the backbone's "
                                 "weights and normalisation statistics stay as loaded.", lo=0)
    backbone_lr: float = _key(1.0, "The backbone's learning rate as a multiple of lr (the heads get lr): below 1 "
                                   "for fine-tuning pretrained weights.", gt=0.0, hi=100.0)
    workers: int = _key(2, "DataLoader worker processes; 0 decodes in the main process.", lo=0, hi=256,
                        runtime=True)
    channels_last: bool = _key(False, "Train in channels-last memory layout: faster convolutions on recent GPUs "
                                      "with amp; results equal up to rounding.", runtime=True)
    compile: bool = _key(False, "Train through torch.compile: faster steps after a one-time compilation (needs a "
                                "C++ compiler on CPU); results equal up to rounding.", runtime=True)
    cache_mb: int = _key(0, "Decode and resize every image once, before the first fold, and keep them in memory as "
                            "uint8 when they fit in this many MiB (images × img_size² × in_chans bytes); 0 decodes "
                            "each image every epoch.", lo=0, runtime=True)
    device: Literal["auto", "cpu", "cuda", "mps"] = _key("auto", "Where to train: auto picks cuda, then mps, "
                                                                 "then cpu.", runtime=True)
    seed: int = _key(0, "Seed of weights, shuffling and augmentation.", lo=0)


@dataclass(frozen=True)
class HeadConfig(LossConfig):
    """One attribute head's loss ([heads.<name>]); loss keys it does not set come from [coarse]."""

    weight: float = _key(1.0, "Weight of this head's loss in the sum over heads.", lo=0.0)
    weight_schedule: tuple[tuple[float, ...], ...] = _key(
        (), "Weights by epoch, as B-CNN trains its branches: [[1, 0.8], [6, 0.2]] is 0.8 from epoch 1 and 0.2 "
            "from epoch 6. Before its first entry the head has `weight`.")

    def weight_at(self, epoch: int) -> float:
        """The loss weight in `epoch` (1-based)."""
        current = self.weight
        for start, value in self.weight_schedule:
            if epoch >= start:
                current = value
        return current


@dataclass(frozen=True)
class CombineConfig:
    """How stage outputs become final labels."""

    method: Literal["product", "routed", "stacking"] = _key(
        "product", "product: P(class) = P(group) × P(class | group), every specialist on every image; routed: "
                   "the coarse argmax picks one specialist per image; stacking: a logistic regression fit on "
                   "out-of-fold stage outputs.")
    route_threshold: float = _key(0.0, "routed: a specialist also runs where its group's coarse probability is at "
                                       "least this, and the product decides there; 0 routes by the argmax alone.",
                                  lo=0.0, hi=1.0)
    stacking_c: float = _key(1.0, "stacking: inverse regularisation strength C of the logistic regression.", gt=0.0)


@dataclass(frozen=True)
class PredictConfig:
    """Prediction-time settings; they do not change what a run learns."""

    tta: tuple[str, ...] = _key((), "Test-time augmentation: the softmax of each image and of these variants is "
                                    "averaged. hflip, vflip, rot90, rot180, rot270, or scale=F (zoom by F: 1.1 "
                                    "crops in, 0.9 pads out). predict --tta overrides it.")


def tta_variant(text: str, where: str) -> tuple[str, float]:
    """A TTA name as (transform, scale): ("hflip", 1.0), ("scale", 1.1)."""
    if text in TTA_TRANSFORMS:
        return text, 1.0
    if text.startswith("scale="):
        try:
            factor = float(text[len("scale="):])
        except ValueError:
            factor = 0.0
        if 0.25 <= factor <= 4.0:
            return "scale", factor
    raise RecipeError(f"{where}: unknown TTA variant {text!r}; expected {', '.join(TTA_TRANSFORMS)} or scale=F "
                      f"with 0.25 ≤ F ≤ 4")


@dataclass(frozen=True)
class Recipe:
    """A whole job: data, folds, hierarchy, the coarse stage, the specialists and the combiner.

    `fine` holds the specialists' defaults ([coarse] overridden by [fine]); `specialists` the
    groups (or heads) whose [fine.<name>] table overrides those defaults further; `heads` the
    loss of every attribute head ([coarse]'s loss keys overridden by [heads.<name>])."""

    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    hierarchy: HierarchyConfig = field(default_factory=HierarchyConfig)
    coarse: StageConfig = field(default_factory=StageConfig)
    fine: StageConfig = field(default_factory=StageConfig)
    specialists: tuple[tuple[str, StageConfig], ...] = ()
    combine: CombineConfig = field(default_factory=CombineConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    heads: tuple[tuple[str, HeadConfig], ...] = ()

    def specialist(self, group: str) -> StageConfig:
        """The training keys of one group's specialist."""
        return dict(self.specialists).get(group, self.fine)

    @property
    def specialist_names(self) -> tuple[str, ...]:
        """Groups or heads with a [fine.<name>] table of their own."""
        return tuple(name for name, _ in self.specialists)

    def with_seed(self, seed: int) -> "Recipe":
        """The same recipe with every stage seeded by `seed` (the folds keep theirs, so runs that
        differ only in seed share folds and their out-of-fold outputs line up)."""
        def seeded(stage: StageConfig) -> StageConfig:
            return dataclasses.replace(stage, seed=seed)
        return dataclasses.replace(self, coarse=seeded(self.coarse), fine=seeded(self.fine),
                                   specialists=tuple((name, seeded(stage)) for name, stage in self.specialists))

    def head(self, name: str) -> HeadConfig:
        """The loss of one attribute head."""
        return dict(self.heads)[name]

    def to_dict(self) -> dict[str, Any]:
        tables = {name: dataclasses.asdict(getattr(self, name)) for name in _SECTION_CLASSES}
        tables["fine"] = dataclasses.asdict(self.fine)
        tables["fine"].update({name: dataclasses.asdict(stage) for name, stage in self.specialists})
        if self.heads:
            tables["heads"] = {name: dataclasses.asdict(head) for name, head in self.heads}
        return tables

    def to_toml(self) -> str:
        return tomli_w.dumps(_plain(self.to_dict()))


_SECTION_CLASSES = {"data": DataConfig, "folds": FoldsConfig, "hierarchy": HierarchyConfig,
                    "coarse": StageConfig, "combine": CombineConfig, "predict": PredictConfig}
_SECTIONS = (*_SECTION_CLASSES, "fine", "heads")
_NESTED = ("fine", "heads")
"""Sections holding one sub-table per group or head: [fine.<name>], [heads.<name>]."""
RUN_SECTIONS = ("data", "folds", "hierarchy", "coarse", "heads")
"""The sections a run folder is bound to: changing any of them makes a new run."""


def load_recipe(path: str | Path, overrides: typing.Sequence[str] = ()) -> Recipe:
    """Read a TOML recipe and apply `section.key=value` overrides (paths in the file resolve
    against the file's folder, paths in overrides against the working directory)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"recipe {path} cannot be read: {error}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{path}: not valid TOML: {error}") from None
    return recipe_from_dict(raw, source=str(path), overrides=overrides, base=path.resolve().parent)


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe", overrides: typing.Sequence[str] = (),
                     base: Path | None = None) -> Recipe:
    """Build a Recipe from nested dicts (a parsed TOML file), checking every key. Relative paths
    resolve against `base` (default: the working directory), so a recipe always holds absolute
    paths; `overrides` (`section.key=value`) are applied on top, their paths resolving against
    the working directory, and errors in them name the --set option."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a table of sections")
    base = Path.cwd() if base is None else base
    raw = {name: dict(table) if isinstance(table, dict) else table for name, table in raw.items()}
    for name in _NESTED:
        if isinstance(raw.get(name), dict):
            raw[name] = {k: dict(v) if isinstance(v, dict) else v for k, v in raw[name].items()}
    for name in raw:
        if name not in _SECTIONS:
            raise RecipeError(f"{source}: unknown section [{name}]{_suggest(name, _SECTIONS)}; "
                              f"allowed: {', '.join(_SECTIONS)}")
    for table_path, table in _stage_tables(raw, source):
        _resolve_paths(table, _table_class(table_path), base)
    overridden = {_apply_override(raw, text) for text in overrides}
    sections = {name: _build_table(cls, raw.get(name, {}), name, source, overridden)
                for name, cls in _SECTION_CLASSES.items()}
    fine_table = raw.get("fine", {})
    group_tables = {k: v for k, v in fine_table.items() if isinstance(v, dict)}
    fine = _build_table(StageConfig, {k: v for k, v in fine_table.items() if not isinstance(v, dict)},
                        "fine", source, overridden, inherit=sections["coarse"])
    specialists = tuple((name, _build_table(StageConfig, table, f"fine.{name}", source, overridden, inherit=fine))
                        for name, table in group_tables.items())
    heads = _build_heads(raw.get("heads", {}), sections["hierarchy"], sections["coarse"], source, overridden)
    recipe = Recipe(**sections, fine=fine, specialists=specialists, heads=heads)
    _check_recipe(recipe, source)
    return recipe


def _build_heads(table: Any, hierarchy: HierarchyConfig, coarse: StageConfig, source: str,
                 overridden: typing.Collection[str]) -> tuple[tuple[str, HeadConfig], ...]:
    """Every attribute head's loss: [coarse]'s loss keys, then its [heads.<name>] table."""
    if not isinstance(table, dict):
        raise RecipeError(f"{source}: heads must be a table of [heads.<name>] tables, got {show_value(table)}")
    for name, sub in table.items():
        if not isinstance(sub, dict):
            raise RecipeError(f"{source}: heads.{name} must be a table ([heads.{name}]), got {show_value(sub)}")
        if name not in hierarchy.heads:
            allowed = ", ".join(hierarchy.heads) if hierarchy.heads else "none (set [hierarchy] heads first)"
            raise RecipeError(f"{source}: [heads.{name}]: there is no head {name!r}{_suggest(name, hierarchy.heads)}; "
                              f"heads are {allowed}")
    inherited = HeadConfig(**{f.name: getattr(coarse, f.name) for f in dataclasses.fields(LossConfig)})
    return tuple((name, _build_table(HeadConfig, table.get(name, {}), f"heads.{name}", source, overridden,
                                     inherit=inherited)) for name in hierarchy.heads)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`coarse.epochs=3` → (["coarse", "epochs"], 3); `fine.GROUP.img_size=64` has three parts.
    The value is read as TOML, else kept as text."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected section.key=value")
    dotted, value_text = text.split("=", 1)
    keys = [part.strip() for part in dotted.strip().split(".")]
    if not all(keys) or not (len(keys) == 2 and keys[0] != "heads" or (len(keys) == 3 and keys[0] in _NESTED)):
        raise RecipeError(f"--set {text!r}: expected section.key=value (e.g. coarse.epochs=3), "
                          f"fine.GROUP.key=value or heads.HEAD.key=value")
    try:
        value = tomllib.loads(f"v = {value_text}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text
    return keys, value


def _apply_override(raw: dict[str, Any], text: str) -> str:
    keys, value = parse_override(text)
    if keys[0] not in _SECTIONS:
        raise RecipeError(f"--set {text!r}: unknown section {keys[0]!r}{_suggest(keys[0], _SECTIONS)}")
    table = raw
    for part in keys[:-1]:
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            raise RecipeError(f"--set {text!r}: {'.'.join(keys[:-1])} in the recipe is not a table")
    meta = _field_meta(_table_class(tuple(keys[:-1]))).get(keys[-1])
    if meta is not None and meta["path"] and isinstance(value, str) and value:
        value = str(Path(value).resolve())
    table[keys[-1]] = value
    return ".".join(keys)


def _table_class(table_path: tuple[str, ...]) -> type:
    if table_path[0] == "heads":
        return HeadConfig
    return StageConfig if table_path[0] == "fine" else _SECTION_CLASSES[table_path[0]]


def _stage_tables(raw: dict[str, Any], source: str) -> list[tuple[tuple[str, ...], dict]]:
    """Every table of the recipe with its path: ("coarse",), ("fine",), ("fine", "GROUP"), …"""
    tables = []
    for name, table in raw.items():
        if not isinstance(table, dict):
            raise RecipeError(f"{source}: {name} must be a table ([{name}]), got {show_value(table)}")
        if name != "heads":
            tables.append(((name,), table))
        if name in _NESTED:
            tables += [((name, sub_name), sub) for sub_name, sub in table.items() if isinstance(sub, dict)]
    return tables


def _resolve_paths(table: dict[str, Any], cls: type, base: Path) -> None:
    for key, meta in _field_meta(cls).items():
        value = table.get(key)
        if meta["path"] and isinstance(value, str) and value:
            table[key] = str((base / Path(value).expanduser()).resolve())


def _field_meta(cls: type) -> dict[str, dict[str, Any]]:
    return {f.name: dict(f.metadata) for f in dataclasses.fields(cls)}


def _build_table(cls: type, table: Any, name: str, source: str, overridden: typing.Collection[str],
                 inherit: Any = None) -> Any:
    """One config object from one table; keys it does not set come from `inherit` (or the defaults)."""
    if not isinstance(table, dict):
        raise RecipeError(f"{source}: {name} must be a table ([{name}]), got {show_value(table)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            raise RecipeError(f"{source}: unknown key {name}.{key}{_suggest(key, fields)}; "
                              f"allowed in [{name}]: {', '.join(fields)}")
        where = (f"--set {name}.{key}={show_value(value)}" if f"{name}.{key}" in overridden
                 else f"{source}: {name}.{key} = {show_value(value)}")
        checked = _coerce(value, hints[key], where)
        _check_bounds(checked, fields[key].metadata, where)
        values[key] = checked
    if cls is StageConfig:
        # A stage that names its own starting weights does not inherit the other kind.
        if values.get("weights") and "pretrained" not in values:
            values["pretrained"] = False
        if values.get("pretrained") and "weights" not in values:
            values["weights"] = ""
    return dataclasses.replace(inherit, **values) if inherit is not None else cls(**values)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = get_origin(kind)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif origin is Literal:
        if value in get_args(kind):
            return value
    elif kind is Any:
        return value
    elif origin is dict:
        value_kind = get_args(kind)[1]
        if isinstance(value, dict):
            return {str(name): _coerce(item, value_kind, f"{where} ({name})") for name, item in value.items()}
    elif origin is tuple:
        item_kind = get_args(kind)[0]
        if isinstance(value, (list, tuple)):
            try:
                return tuple(_coerce(item, item_kind, where) for item in value)
            except RecipeError:
                pass
    elif origin in (Union, types.UnionType):
        for option in get_args(kind):
            try:
                return _coerce(value, option, where)
            except RecipeError:
                continue
    raise RecipeError(f"{where}: expected {_describe(kind)}")


_BOUNDS = (("lo", operator.ge, "≥"), ("hi", operator.le, "≤"), ("gt", operator.gt, ">"), ("lt", operator.lt, "<"))


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for name, holds, sign in _BOUNDS:
        bound = meta.get(name)
        if bound is not None and not holds(value, bound):
            raise RecipeError(f"{where}: expected a value {sign} {bound}")


def _check_recipe(recipe: Recipe, source: str) -> None:
    data = recipe.data
    sources = [key for key in ("csv", "folder", "mask_images") if getattr(data, key)]
    if len(sources) > 1:
        raise RecipeError(f"{source}: data.{sources[0]} and data.{sources[1]} are both set; choose one")
    if data.images and not data.csv:
        raise RecipeError(f"{source}: data.images only applies with data.csv")
    if list(data.age_bounds) != sorted(set(data.age_bounds)) or any(bound <= 0 for bound in data.age_bounds):
        raise RecipeError(f"{source}: data.age_bounds = {show_value(data.age_bounds)}: expected increasing "
                          f"positive ages")
    _check_heads(recipe, source)
    stages = [("coarse", recipe.coarse), ("fine", recipe.fine)]
    stages += [(f"fine.{name}", stage) for name, stage in recipe.specialists]
    if recipe.coarse.init_from_coarse:
        raise RecipeError(f"{source}: coarse.init_from_coarse applies to specialists ([fine]) only")
    for name, stage in stages:
        if stage.pretrained and stage.weights:
            raise RecipeError(f"{source}: {name}.pretrained and {name}.weights are both set; choose one")
        if stage.scheduler in ("cosine", "cosine_restarts", "plateau") and stage.min_lr >= stage.lr:
            raise RecipeError(f"{source}: {name}.min_lr = {stage.min_lr:g} is not below {name}.lr = {stage.lr:g}; "
                              f"the {stage.scheduler} schedule would raise the rate instead of lowering it")
        if stage.init_from_coarse and stage.weights:
            raise RecipeError(f"{source}: {name}.init_from_coarse and {name}.weights are both set; choose one")
        if stage.init_from_coarse and (stage.model, stage.in_chans) != (recipe.coarse.model, recipe.coarse.in_chans):
            raise RecipeError(f"{source}: {name}.init_from_coarse needs the coarse stage's model and in_chans "
                              f"({recipe.coarse.model!r}, {recipe.coarse.in_chans}), got ({stage.model!r}, "
                              f"{stage.in_chans})")
        if stage.in_chans == 2:
            raise RecipeError(f"{source}: {name}.in_chans = 2: expected 1 (greyscale) or 3 (RGB)")
        if stage.freeze_epochs and stage.freeze_epochs >= stage.epochs:
            raise RecipeError(f"{source}: {name}.freeze_epochs = {stage.freeze_epochs} leaves no epoch of "
                              f"{name}.epochs = {stage.epochs} to train the backbone")
        if not isinstance(stage.augment, str):
            from hierclf.data.augment import check_augment_list  # albumentations, only where a list needs it
            check_augment_list(stage.augment, f"{source}: {name}.augment")
    for text in recipe.predict.tta:
        tta_variant(text, f"{source}: predict.tta")
    if recipe.hierarchy.group_names and len(recipe.hierarchy.group_names) != len(recipe.hierarchy.groups):
        raise RecipeError(f"{source}: hierarchy.group_names has {len(recipe.hierarchy.group_names)} names "
                          f"for {len(recipe.hierarchy.groups)} groups")


def _check_heads(recipe: Recipe, source: str) -> None:
    hierarchy = recipe.hierarchy
    if not hierarchy.heads:
        if hierarchy.separate:
            raise RecipeError(f"{source}: hierarchy.separate applies to hierarchy.heads, which is not set")
        return
    if hierarchy.groups:
        raise RecipeError(f"{source}: hierarchy.groups and hierarchy.heads are both set; a hierarchy either "
                          f"merges classes into groups or splits them into attributes")
    if recipe.combine.method == "routed":
        raise RecipeError(f"{source}: combine.method = \"routed\" needs groups; with hierarchy.heads there is "
                          f"nothing to route (use product or stacking)")
    for name, spec in hierarchy.heads.items():
        size = spec if isinstance(spec, int) else len(spec)
        if size < 2:
            raise RecipeError(f"{source}: hierarchy.heads.{name} = {show_value(spec)}: a head needs at least 2 values")
    if recipe.data.class_names:
        raise RecipeError(f"{source}: with hierarchy.heads the class names come from the heads; name a head's values "
                          f"with heads = {{ {next(iter(hierarchy.heads))} = [\"name\", …] }} instead of data.class_names")
    for name, head in recipe.heads:
        for entry in head.weight_schedule:
            if len(entry) != 2 or entry[0] != int(entry[0]) or entry[0] < 1 or entry[1] < 0:
                raise RecipeError(f"{source}: heads.{name}.weight_schedule: expected [epoch, weight] pairs with "
                                  f"epoch ≥ 1 and weight ≥ 0, got {show_value(entry)}")
        starts = [entry[0] for entry in head.weight_schedule]
        if starts != sorted(set(starts)):
            raise RecipeError(f"{source}: heads.{name}.weight_schedule: epochs must increase, got {show_value(starts)}")
    changes = {1} | {int(start) for _, head in recipe.heads for start, _ in head.weight_schedule}
    for epoch in sorted(changes):
        if sum(head.weight_at(epoch) for _, head in recipe.heads) <= 0:
            raise RecipeError(f"{source}: every head's loss weight is 0 in epoch {epoch}; nothing would be learned")


def recipe_differences(old: Recipe, new: Recipe, sections: typing.Sequence[str] = RUN_SECTIONS) -> list[str]:
    """Keys of `sections` that change what a run learns (runtime keys such as workers excluded)."""
    changed = []
    for section in sections:
        if section == "heads":
            old_heads, new_heads = dict(old.heads), dict(new.heads)
            for name in sorted(set(old_heads) | set(new_heads)):
                if name in old_heads and name in new_heads:
                    changed += config_differences(old_heads[name], new_heads[name], f"heads.{name}")
                elif name not in new_heads or name not in old_heads:
                    changed.append(f"heads.{name}: {'removed' if name in old_heads else 'added'}")
            continue
        changed += config_differences(getattr(old, section), getattr(new, section), section)
    return changed


def config_differences(old: Any, new: Any, prefix: str) -> list[str]:
    """`prefix.key: old → new` for every non-runtime key that differs between two config objects."""
    changed = []
    for item in dataclasses.fields(old):
        if item.metadata.get("runtime"):
            continue
        before, after = getattr(old, item.name), getattr(new, item.name)
        if before != after:
            changed.append(f"{prefix}.{item.name}: {show_value(before)} → {show_value(after)}")
    return changed


def key_reference() -> dict[str, list[tuple[str, Any, str]]]:
    """(key, default, doc) of every recipe key, by section: the source of docs/recipes.md."""
    def default(item: dataclasses.Field) -> Any:
        return item.default_factory() if item.default is dataclasses.MISSING else item.default

    classes = {**_SECTION_CLASSES, "heads.<name>": HeadConfig}
    return {section: [(f.name, default(f), f.metadata["doc"]) for f in dataclasses.fields(cls)]
            for section, cls in classes.items()}


def key_reference_markdown() -> str:
    """The key tables of docs/recipes.md, generated so the docs never drift from the code."""
    lines = []
    for section, keys in key_reference().items():
        lines += [f"### [{section}]", "", "| key | default | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{name}` | `{show_value(default)}` | {doc} |" for name, default, doc in keys]
        lines.append("")
    return "\n".join(lines)


def _describe(kind: Any) -> str:
    origin = get_origin(kind)
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(option) for option in get_args(kind))
    if kind is Any:
        return "a value"
    if origin is tuple:
        return f"a list of {_plural(_describe(get_args(kind)[0]))}"
    if origin is dict:
        return f"a table whose values are each {_describe(get_args(kind)[1])}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(option) for option in get_args(kind))
    return str(kind)


def _plural(description: str) -> str:
    for article in ("an ", "a "):
        if description.startswith(article):
            description = description[len(article):]
    return description.replace("integer", "integers").replace("string", "strings").replace("number", "numbers")


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def show_value(value: Any) -> str:
    """A value as the recipe would spell it, on one line."""
    try:
        return json.dumps(_plain(value), ensure_ascii=False)
    except TypeError:
        return repr(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
