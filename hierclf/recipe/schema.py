"""The recipe schema: every key of a recipe, as typed, frozen config objects.

Each config class lists its keys as dataclass fields; a field's metadata carries its
documentation and its bounds, so validation (`hierclf.recipe.coerce`), error messages and the docs' key
reference (`hierclf.recipe.reference`) all come from one place. Reading a TOML file into these objects
is `hierclf.recipe.reading`; the rules that tie keys together are `hierclf.recipe.rules`.

A stage's table is one flat set of keys for the user, but its class is made of slices
(ModelConfig, TrainConfig, LoaderConfig, LossConfig), so each part of training takes only the
slice it uses.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import tomli_w

from hierclf.recipe.combiners import COMBINER_NAMES, combiner_doc
from hierclf.config.data import DataConfig
from hierclf.config.keys import setting


@dataclass(frozen=True)
class FoldsConfig:
    """How rows are split for K-fold training and out-of-fold scoring."""

    count: int = setting(5, "Number of folds; 1 is a single stratified hold-out split.", lo=1, hi=100)
    holdout: float = setting(0.2, "Validation fraction when count = 1.", gt=0.0, lt=1.0)
    seed: int = setting(0, "Seed of the fold assignment.", lo=0)


@dataclass(frozen=True)
class HierarchyConfig:
    """Which classes the coarse stage merges; no groups trains a flat classifier."""

    groups: tuple[tuple[Union[int, str], ...], ...] = setting(
        (), "Groups of confusable classes, by index or name: [[3, 7, 14]]. Each becomes one coarse class.")
    group_names: tuple[str, ...] = setting((), "Names of the groups, in order. Default: member names joined by '+'.")
    heads: dict[str, Union[int, tuple[str, ...]]] = setting(
        {}, "Factorised labels instead of groups: one coarse head per attribute, in order, each a size or "
            "its value names: { mask = 3, gender = 2, age = 3 }. The label is the mixed-radix number "
            "(mask·6 + gender·3 + age).")
    separate: bool = setting(False, "heads: one model per attribute instead of one backbone with a head each.")
    coarse_run: str = setting("", "groups: a finished flat run (same data and folds) whose fold models are this run's "
                               "coarse stage, nothing retrained: P(group) is its probabilities summed over the "
                               "group, and the blend combiner mixes its within-group distribution with each "
                               "specialist's. [coarse] must be that run's.", path=True)


Optimizer = Literal["adamw", "adam", "sgd"]
Scheduler = Literal["cosine", "cosine_restarts", "step", "plateau", "none"]
Monitor = Literal["val_macro_f1", "val_accuracy", "val_loss", "train_loss", "train_accuracy"]


def lower_is_better(monitor: str) -> bool:
    """Whether a monitored figure is best at its lowest (a loss) or its highest (a score)."""
    return monitor.endswith("loss")


LossName = Literal["cross_entropy", "focal"]
AugmentPreset = Literal["none", "light", "heavy", "document"]
Augment = Union[AugmentPreset, tuple[dict[str, Any], ...]]
ClassWeights = Union[Literal["none", "balanced"], tuple[float, ...]]


CombinerName = Literal[COMBINER_NAMES]


@dataclass(frozen=True)
class LossConfig:
    """The loss of one output: a stage's, or one attribute head's."""

    loss: LossName = setting("cross_entropy", "cross_entropy, or focal: cross entropy scaled by (1 − p)^focal_gamma, "
                                           "so easy examples count less.")
    focal_gamma: float = setting(2.0, "focal: how much easy examples are down-weighted; 0 is cross entropy.", lo=0.0)
    class_weights: ClassWeights = setting("none", "Per-class loss weights: none, balanced (inverse class frequency "
                                               "in the training rows), or one number per class.")
    label_smoothing: float = setting(0.0, "Label smoothing of the cross entropy.", lo=0.0, lt=1.0)


@dataclass(frozen=True)
class ModelConfig:
    """Which network a stage trains, from which weights, at which input size."""

    model: str = setting("resnet18", "timm architecture name (timm.list_models()).")
    pretrained: bool = setting(False, "Download timm's pretrained weights (needs network).")
    weights: str = setting("", "Local .safetensors or .pth weights to start from; a head of another "
                            "size is left out and trained anew.", path=True)
    init_from_coarse: bool = setting(False, "Specialists only: start each fold's specialist from the coarse model "
                                         "of the same fold (leak-free: neither saw that fold), with a new head.")
    img_size: int = setting(224, "Side of the square network input, pixels.", lo=8, hi=4096)
    in_chans: int = setting(3, "Input channels: 3 (RGB) or 1 (greyscale).", lo=1, hi=3)
    drop_rate: float = setting(0.0, "Dropout before the classifier.", lo=0.0, lt=1.0)


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimiser (timm's create_optimizer_v2) and the learning rates of its parameter groups."""

    optimizer: Optimizer = setting("adamw", "Optimiser (timm.optim.create_optimizer_v2).")
    lr: Union[float, Literal["auto"]] = setting(
        1e-3, "Peak learning rate, or auto: chosen on the stage's data before its folds train, by short runs at "
              "a ladder of rates on fold 0's training rows (train/auto.py; three to five trials for each batchnorm "
              "mode asked for, each the stage's epochs over shares of two thirds of those rows, two passes in "
              "all, scored on the last third), written to STAGE/auto.json.", gt=0.0, lt=10.0)
    lr_base_batch: int = setting(0, "0: lr is used as written, whatever the batch. Else lr is the rate for a step of "
                                 "this many images, scaled to the stage's step (batch_size × accumulate): linearly "
                                 "for sgd, by the square root for adam and adamw, as timm's lr_base_size does.",
                                 lo=0)
    weight_decay: float = setting(1e-4, "Weight decay.", lo=0.0, lt=1.0)
    momentum: float = setting(0.9, "Momentum of sgd (Nesterov); 0 is plain SGD.", lo=0.0, lt=1.0)
    backbone_lr: float = setting(1.0, "The backbone's learning rate as a multiple of lr (the heads get lr): below 1 "
                                   "for fine-tuning pretrained weights.", gt=0.0, hi=100.0)
    layer_decay: float = setting(1.0, "Layer-wise rate decay (BEiT's, over timm's layer groups): the backbone's top "
                                   "layer trains at its rate, each layer below at layer_decay × the one above, so "
                                   "the general low-level features move least; 1 is off.", gt=0.0, hi=1.0)


@dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule (timm.scheduler, or PyTorch's plateau decay)."""

    scheduler: Scheduler = setting("cosine", "Learning-rate schedule (timm.scheduler), advanced after every optimiser "
                                          "update.")
    warmup_epochs: int = setting(0, "Epochs of linear warm-up from warmup_lr.", lo=0)
    warmup_lr: float = setting(1e-6, "Learning rate at the start of warm-up.", lo=0.0)
    min_lr: float = setting(1e-6, "Floor of cosine schedules and plateau decay (eta_min).", lo=0.0)
    restart_epochs: int = setting(10, "cosine_restarts: length of the first cycle (T_0).", lo=1)
    restart_mult: float = setting(2.0, "cosine_restarts: growth of each next cycle (T_mult).", lo=1.0)
    step_epochs: int = setting(30, "step: epochs between decays.", lo=1)
    decay_rate: float = setting(0.1, "step and plateau: factor applied at each decay.", gt=0.0, hi=1.0)
    plateau_patience: int = setting(3, "plateau: epochs without improvement before a decay.", lo=0)


@dataclass(frozen=True)
class MixConfig:
    """Mixup and CutMix (timm's Mixup): pairs of images blended, their labels alike."""

    mixup_alpha: float = setting(0.0, "Mixup (timm): blend pairs of images and their labels by λ ~ Beta(α, α); "
                                   "0 is off. Composes with label_smoothing.", lo=0.0)
    cutmix_alpha: float = setting(0.0, "CutMix (timm): paste a box of one image into another, labels mixed by area; "
                                    "0 is off.", lo=0.0)
    mix_prob: float = setting(1.0, "mixup/cutmix: probability that a batch is mixed.", lo=0.0, hi=1.0)
    mix_switch_prob: float = setting(0.5, "With both mixup_alpha and cutmix_alpha: probability of CutMix for a mixed "
                                       "batch.", lo=0.0, hi=1.0)


@dataclass(frozen=True)
class TrainConfig(MixConfig, ScheduleConfig, OptimizerConfig):
    """What `fit` needs: the optimiser, its schedule, mixing, and the epoch loop (steps, stopping,
    weight averaging, freezing, speed keys)."""

    epochs: int = setting(10, "Maximum number of epochs.", lo=1, hi=100000)
    accumulate: int = setting(1, "Batches whose gradients add up before each optimiser step: the step sees "
                              "batch_size × accumulate images, in the memory of one batch.", lo=1, hi=4096)
    clip_grad: float = setting(0.0, "Clip gradients before each step (timm's dispatch_clip_grad); 0 does not clip.",
                               lo=0.0)
    clip_mode: Literal["norm", "value", "agc"] = setting("norm", "clip_grad: total norm, each value, or adaptive "
                                                              "(AGC, relative to each weight's norm).")
    amp: bool = setting(True, "Mixed precision on CUDA (bf16 where supported, else fp16 with scaling).")
    precision: Literal["fp32", "bf16"] = setting(
        "fp32", "Arithmetic of the training steps on a CPU: bf16 runs their forward pass under torch.autocast in "
                "bfloat16, on the matrix units of CPUs that have them (AVX-512 BF16, AMX; refused elsewhere): "
                "2.0x a ResNet-50 training step and 1.4x a ConvNeXt-nano one on one core, but 1.2-1.3x an "
                "EfficientNet-Lite0 one, where channels_last gives 1.6x and bf16 adds nothing to it "
                "(docs/benchmarks.md). Validation, the probe and predict stay fp32. On CUDA, amp decides.")
    monitor: Monitor = setting("val_macro_f1", "Logged metric that picks the best epoch and drives early stopping.")
    patience: int = setting(0, "Stop after this many epochs without improvement of monitor; 0 never stops early.", lo=0)
    min_delta: float = setting(0.0, "Smallest change of monitor that counts as an improvement.", lo=0.0)
    ema: bool = setting(False, "Keep an exponential moving average of the weights (timm's ModelEmaV3); it is what "
                            "is validated and saved.")
    ema_decay: float = setting(0.999, "ema: decay per optimiser step.", gt=0.0, lt=1.0)
    ema_warmup: bool = setting(True, "ema: let the decay grow from 0 to ema_decay over the first steps, so the "
                                  "average does not drag in the untrained start.")
    freeze_epochs: int = setting(0, "Train only the classifier head(s) for this many first epochs: the backbone's "
                                    "weights stay as loaded; then its rate warms up from zero over one epoch.",
                                 lo=0)
    batchnorm: Literal["train", "frozen", "auto"] = setting(
        "train", "Batch normalisation's statistics: train normalises each training batch by its own and moves the "
                 "running ones towards the data's (also while freeze_epochs trains the head alone); frozen keeps the "
                 "loaded running statistics throughout (eval mode; the layers' scale and shift still train): photos "
                 "of what the weights were trained on gain, far-off images at a high rate collapse; auto: chosen "
                 "by a short run in each mode at the stage's rate (with the rate, where lr = auto), as lr = auto "
                 "chooses (train/auto.py), two trials that cost about two fifths of one fold.")
    head_init: Literal["zero", "probe"] = setting(
        "zero", "How a new head on trained weights starts: zero (every class equally likely), or probe (LP-FT: each "
                "fold's head is its linear probe, the regression on the starting weights' features of the fold's "
                "training rows, and the starting model is scored as epoch 0, so monitor keeps it where no trained "
                "epoch beats it).")
    frozen_stages: int = setting(0, "Keep the backbone's lowest N stages (timm's coarse parameter groups: the stem, "
                                    "then each stage) as loaded throughout, weights and normalisation statistics "
                                    "alike: HD-CNN's shared lower layers. A specialist started from the coarse model "
                                    "(init_from_coarse) then trains only its top, and no step runs the backward pass "
                                    "below it.", lo=0)
    channels_last: bool = setting(False, "Train and predict in channels-last memory layout: faster convolutions on "
                                      "recent GPUs with amp, and on CPUs for depthwise networks (1.6x an "
                                      "EfficientNet-Lite0 training step on one core); results equal up to "
                                      "rounding.", runtime=True)
    compile: bool = setting(False, "Train through torch.compile: faster steps after a one-time compilation (needs a "
                                "C++ compiler on CPU); results equal up to rounding.", runtime=True)
    sync_batchnorm: bool = setting(False, "With several processes (torchrun): batch-norm statistics over the global "
                                       "batch instead of each process's share (torch's SyncBatchNorm; CUDA only).")


@dataclass(frozen=True)
class LoaderConfig:
    """How training rows reach the model: batches, augmentation, sampling, decoding."""

    batch_size: int = setting(32, "Images per forward pass, over every process: under torchrun each of its N "
                               "processes takes batch_size / N of them (a multiple of N), so a recipe trains "
                               "alike on one process or N.", lo=1, hi=65536)
    augment: Augment = setting("none", "Training augmentation (albumentations): a preset (light: small shifts, "
                                    "rotations and lighting; heavy: flips, affine, colour, blur or noise, dropout; "
                                    "document: what scans and phone photos of pages show: 90° turns, small "
                                    "rotations, perspective, blur, noise, lighting, compression), or a list of "
                                    "transforms with their arguments: [{ name = \"HorizontalFlip\", p = 0.5 }].")
    sampler: Literal["shuffle", "balanced"] = setting("shuffle", "Order of training rows: shuffle each epoch, or "
                                                              "balanced: draw classes equally often (with "
                                                              "replacement, WeightedRandomSampler).")
    class_cap: int = setting(0, "At most this many rows of each class per epoch, drawn anew each epoch (with balanced: "
                             "the epoch draws class_cap per class); 0 is no cap.", lo=0)
    workers: int = setting(2, "DataLoader worker processes; 0 decodes in the main process. With augmentation each "
                              "worker draws its own random stream, so another count trains another (equally valid) "
                              "model: a run reproduces at the same count.", lo=0, hi=256, runtime=True)
    cache_mb: int = setting(0, "Decode and resize every image once, before the first fold, and keep them in memory as "
                            "uint8 when they fit in this many MiB (images × img_size² × in_chans bytes); 0 decodes "
                            "each image every epoch.", lo=0, runtime=True)
    threads: int = setting(0, "torch threads of this training process; 0: torch's default, or, when several processes "
                           "share the machine (torchrun's LOCAL_WORLD_SIZE, or HIERCLF_PROCESSES_PER_MACHINE), the "
                           "machine's cores divided among them, so they do not slow each other down.", lo=0,
                           runtime=True)


@dataclass(frozen=True)
class StageConfig(LossConfig, LoaderConfig, TrainConfig, ModelConfig):
    """Every key of one stage (coarse or a specialist), as one recipe table. Each part of the
    pipeline takes only its own slice: the model factory a ModelConfig, `fit` a TrainConfig, the
    loaders a LoaderConfig, the loss a LossConfig."""

    device: Literal["auto", "cpu", "cuda", "mps"] = setting("auto", "Where to train: auto picks cuda, then mps, "
                                                                 "then cpu.", runtime=True)
    seed: int = setting(0, "Seed of weights, shuffling and augmentation.", lo=0)
    probe_check: bool = setting(False, "Before a fold trains, fit the linear probe on the starting weights' features "
                                    "(one pass over the fold's rows) and warn when a trained epoch scores below it: "
                                    "fine-tuning that loses what the backbone knew.", runtime=True)
    tensorboard: bool = setting(False, "Write TensorBoard event files into each fold's folder as it trains (every "
                                    "figure of metrics.jsonl by epoch, the recipe, the validation confusion matrix): "
                                    "tensorboard --logdir runs/. Needs pip install 'hierclf[tensorboard]'; "
                                    "fit-coarse/fit-fine --tensorboard sets it.", runtime=True)


@dataclass(frozen=True)
class HeadConfig(LossConfig):
    """One attribute head's loss ([heads.<name>]); loss keys it does not set come from [coarse]."""

    weight: float = setting(1.0, "Weight of this head's loss in the sum over heads.", lo=0.0)
    weight_schedule: tuple[tuple[float, ...], ...] = setting(
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

    method: CombinerName = setting("product", "How stage outputs become final labels; " + combiner_doc())
    route_threshold: float = setting(0.0, "routed: a specialist also runs where its group's coarse probability is at "
                                       "least this, and the product decides there; 0 routes by the argmax alone.",
                                     lo=0.0, hi=1.0)
    stacking_c: float = setting(1.0, "stacking: inverse regularisation strength C of the logistic regression.", gt=0.0)
    calibrate: bool = setting(False, "Temperature-scale each stage's probabilities, one temperature per output block "
                                  "fit on its out-of-fold outputs (calibration.json) when the last stage finishes; "
                                  "the combiners, evaluate and predict then use the scaled ones.")


@dataclass(frozen=True)
class PredictConfig:
    """Prediction-time settings; they do not change what a run learns."""

    tta: tuple[str, ...] = setting((), "Test-time augmentation: the softmax of each image and of these variants is "
                                    "averaged. hflip, vflip, rot90, rot180, rot270, or scale=F (zoom by F: 1.1 "
                                    "crops in, 0.9 pads out). predict --tta overrides it.")


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
        tables = {name: dataclasses.asdict(getattr(self, name)) for name in SECTION_CLASSES}
        tables["fine"] = dataclasses.asdict(self.fine)
        tables["fine"].update({name: dataclasses.asdict(stage) for name, stage in self.specialists})
        if self.heads:
            tables["heads"] = {name: dataclasses.asdict(head) for name, head in self.heads}
        return tables

    def to_toml(self) -> str:
        return tomli_w.dumps(plain(self.to_dict()))


SECTION_CLASSES = {"data": DataConfig, "folds": FoldsConfig, "hierarchy": HierarchyConfig,
                    "coarse": StageConfig, "combine": CombineConfig, "predict": PredictConfig}
SECTIONS = (*SECTION_CLASSES, "fine", "heads")
NESTED_SECTIONS = ("fine", "heads")
"""Sections holding one sub-table per group or head: [fine.<name>], [heads.<name>]."""
RUN_SECTIONS = ("data", "folds", "hierarchy", "coarse", "heads")
"""The sections a run folder is bound to: changing any of them makes a new run."""


def learned_keys(config: Any) -> dict[str, Any]:
    """A config object's keys that change what a run learns, by name: every key but the runtime
    ones (workers, device…)."""
    return {item.name: getattr(config, item.name) for item in dataclasses.fields(config)
            if not item.metadata.get("runtime")}


def plain(value: Any) -> Any:
    """Tuples as lists, all the way down: the form TOML and JSON write."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value
