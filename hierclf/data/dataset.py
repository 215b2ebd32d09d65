"""From rows to batches: decoding, albumentations transforms, and a DataLoader."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from hierclf.data.augment import augment_transforms
from hierclf.data.items import UNKNOWN_LABEL, Items
from hierclf.data.sampling import ShardSampler, build_sampler
from hierclf.seeding import derive_seed


class ImageTransform:
    """Resize and augment each image as uint8 (albumentations), then normalise a whole batch at
    once. An image already at the input size and not augmented skips albumentations entirely;
    normalising per batch instead of per image is what keeps the loader from costing more than
    a hand-written loop over ready tensors."""

    def __init__(self, img_size: int, mean: Sequence[float], std: Sequence[float],
                 augment: str | Sequence[Mapping[str, Any]] = "none", seed: int | None = None):
        self.size = img_size
        self.decode_side = 2 * img_size  # files may be decoded reduced to twice the input size, no smaller
        transforms = augment_transforms(augment, channels=len(mean))
        self.augmenting = bool(transforms)
        self.pipeline = A.Compose([A.Resize(img_size, img_size), *transforms], seed=seed)
        self.shift = torch.tensor(mean, dtype=torch.float32).mul(255.0).view(1, -1, 1, 1)
        self.scale = torch.tensor(std, dtype=torch.float32).mul(255.0).reciprocal().view(1, -1, 1, 1)

    def pixels(self, image: np.ndarray) -> np.ndarray:
        """H×W×C uint8 at the input size, augmented when training."""
        if not self.augmenting and image.shape[:2] == (self.size, self.size):
            return image
        return self.pipeline(image=image)["image"]

    def to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """N×H×W×C uint8 → N×C×H×W float, normalised as the model was trained."""
        # into fresh NCHW memory: a permuted view keeps odd strides (with one channel even
        # `is_contiguous()` says yes), and the convolutions would then take another path
        count, height, width, channels = batch.shape
        tensor = torch.empty((count, channels, height, width), dtype=torch.float32)
        tensor.numpy()[...] = batch.transpose(0, 3, 1, 2)
        return tensor.sub_(self.shift).mul_(self.scale)

    def __call__(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        """One image, as albumentations' Compose is called: {"image": C×H×W tensor}."""
        return {"image": self.to_tensor(self.pixels(image)[None])[0]}

    def set_random_seed(self, seed: int) -> None:
        self.pipeline.set_random_seed(seed)

    def _drawing(self) -> Iterator[Any]:
        """The pipeline and each of its transforms, nested ones included: each keeps a numpy and a
        Python generator of its own."""
        waiting = [self.pipeline]
        while waiting:
            transform = waiting.pop(0)
            if hasattr(transform, "random_generator") and hasattr(transform, "py_random"):
                yield transform
            waiting.extend(getattr(transform, "transforms", None) or [])

    def random_state(self) -> list[dict[str, Any]]:
        """The state of every generator augmentation draws from, as JSON-able values."""
        return [{"numpy": transform.random_generator.bit_generator.state,
                 "python": _python_state(transform.py_random.getstate())} for transform in self._drawing()]

    def set_random_state(self, states: list[dict[str, Any]]) -> None:
        """Every generator as `random_state` gave it."""
        for transform, state in zip(self._drawing(), states):
            transform.random_generator.bit_generator.state = state["numpy"]
            transform.py_random.setstate(_python_state_back(state["python"]))

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.size}, {self.pipeline!r})"


class ImageDataset(Dataset):
    """Yields (image tensor, targets, row), a batch at a time (`__getitems__`). Decoding happens
    here, in the loader's workers. Targets are N×H, one column per output block (a plain vector
    is one column); without targets every row's is UNKNOWN_LABEL."""

    def __init__(self, items: Items, targets: np.ndarray | None, transform: ImageTransform, channels: int):
        self.items = items
        targets = np.full(len(items), UNKNOWN_LABEL, dtype=np.int64) if targets is None else targets
        self.targets = np.asarray(targets, dtype=np.int64).reshape(len(items), -1)
        self.transform = transform
        self.channels = channels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, row: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The image, its targets (one per output block) and its row."""
        pixels = self.items.image(row, self.channels, self.transform.decode_side)
        return self.transform(pixels)["image"], torch.as_tensor(self.targets[row]), row

    def __getitems__(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A whole batch: images, targets and rows, stacked (the loader's collate passes it on)."""
        rows = np.asarray(rows)
        side = self.transform.decode_side
        pixels = np.stack([self.transform.pixels(self.items.image(row, self.channels, side)) for row in rows])
        return self.transform.to_tensor(pixels), torch.from_numpy(self.targets[rows]), torch.from_numpy(rows)

    def random_state(self) -> list[dict[str, Any]]:
        """What the augmentation's generators hold (a checkpoint keeps it, in the main process:
        loader workers draw from copies seeded anew each epoch)."""
        return self.transform.random_state()

    def set_random_state(self, states: list[dict[str, Any]]) -> None:
        self.transform.set_random_state(states)


def build_transform(img_size: int, mean: Sequence[float], std: Sequence[float],
                    augment: str | Sequence[Mapping[str, Any]] = "none", seed: int | None = None) -> ImageTransform:
    """Resize, the augmentation (a preset or the recipe's list), normalise, to a CHW float tensor.
    The image has as many channels as `mean` has values."""
    return ImageTransform(img_size, mean, std, augment, seed)


@dataclass(frozen=True, eq=False)
class TrainingOrder:
    """How a training loader orders its rows each epoch: shuffled, or by `sampler` ("balanced":
    classes drawn equally often) and `class_cap` (at most that many rows of a class), by the
    class `labels` gives each row; whether a short last batch is dropped; and `share`, the part of
    that epoch drawn (anew each epoch): a short trial keeps the recipe's epochs, and so its
    schedule's shape, in fewer steps."""

    sampler: str = "shuffle"
    class_cap: int = 0
    labels: np.ndarray | None = field(default=None, repr=False)
    drop_last: bool = False
    share: float = 1.0


def make_loader(dataset: Dataset, batch_size: int, *, workers: int, device: torch.device, seed: int = 0,
                order: TrainingOrder | None = None, shard: tuple[int, int] = (0, 1)) -> DataLoader:
    """A loader over `dataset`, seeded.

    Args:
        dataset: the rows (an `ImageDataset`, or any dataset with `__getitems__`).
        batch_size: rows per batch (under torchrun, this process's share of the global batch).
        workers: loader worker processes; 0 decodes in this one.
        device: where batches go (memory is pinned for CUDA).
        seed: the seed of the loader's generator (its order) and of its workers' augmentation.
        order: the training order (shuffled, sampled, capped); None reads the rows in order.
        shard: (rank, world): this process's share when `world` processes train together, of
            each batch of `batch_size` × world rows one process would draw, or of the rows in
            order (for a gather in row order).

    Returns:
        A DataLoader of (images, targets, rows) batches."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    shuffle = order is not None
    chosen = None
    if order is not None and (order.sampler != "shuffle" or order.class_cap):
        if order.labels is None:
            raise ValueError(f"sampler {order.sampler!r} with class_cap {order.class_cap} needs each row's class "
                             f"(labels)")
        chosen = build_sampler(order.sampler, order.class_cap, order.labels, generator, order.share)
    elif order is not None and order.share < 1:
        chosen = RandomSampler(dataset, num_samples=max(1, round(len(dataset) * order.share)), generator=generator)
    drop_last = order is not None and order.drop_last
    rank, world = shard
    if world > 1:
        if shuffle:
            base = chosen if chosen is not None else RandomSampler(dataset, generator=generator)
            chosen = ShardSampler(base, rank, world, drop_to=batch_size * world if drop_last else 0)
        else:
            chosen = range(rank, len(dataset), world)
        drop_last = False  # ShardSampler has cut the order to whole batches already
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and chosen is None, sampler=chosen,
                      num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last,
                      persistent_workers=workers > 0, worker_init_fn=partial(_seed_worker, rank=rank),
                      generator=generator, collate_fn=_batched)


def _batched(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """ImageDataset.__getitems__ already stacks its batch."""
    return batch


def _python_state(state: tuple) -> list:
    """random.Random.getstate() as JSON."""
    return [state[0], list(state[1]), state[2]]


def _python_state_back(saved: list) -> tuple:
    return (saved[0], tuple(saved[1]), saved[2])


def _seed_worker(worker_id: int, rank: int = 0) -> None:
    """Each worker starts with a copy of the transform's random state; give each its own,
    derived from the loader's seed (and the process's rank: processes training together share
    that seed), so augmentation differs across workers yet reproduces."""
    info = torch.utils.data.get_worker_info()
    seed = info.seed if rank == 0 else derive_seed(info.seed, rank)
    info.dataset.transform.set_random_seed(seed % 2**32)
