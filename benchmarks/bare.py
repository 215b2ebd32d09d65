"""What the speed benchmarks' bare loops share: the file dataset a user's script would write,
so hierclf is compared against one and the same hand-written reading of the JPEGs."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2


class JpegFiles(Dataset):
    """A user's file dataset: PIL opens each JPEG, torchvision resizes and normalises it; grey
    with one mean and std, RGB with three."""

    def __init__(self, paths: list[str], labels: np.ndarray, size: int, mean: Sequence[float],
                 std: Sequence[float]):
        self.paths, self.labels = paths, labels
        self.mode = "L" if len(mean) == 1 else "RGB"
        self.transform = v2.Compose([v2.PILToTensor(), v2.Resize((size, size), antialias=True),
                                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        with Image.open(self.paths[row]) as image:
            return self.transform(image.convert(self.mode)), int(self.labels[row])
