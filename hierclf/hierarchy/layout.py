"""What a model's output row holds: one softmax block per thing it predicts, side by side.

A flat or grouped stage is one block (its classes); a stage with attribute heads has one block
per head (mask, gender, age). Softmax, targets, correctness, scores, the loss's split and the
mixing of targets all go through the layout, so no caller asks which kind of stage it has.
Targets are always N×H, one column per block; the joint class of a row is the mixed-radix
number of its columns (mask·6 + gender·3 + age), which for one block is the class itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
import torch

from hierclf.metrics import scores

Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class Block:
    """One softmax of the output: its name (a head's, or "" for a stage's one block) and classes."""

    name: str
    classes: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class OutputLayout:
    """The blocks of an output, in order."""

    blocks: tuple[Block, ...]

    @classmethod
    def single(cls, classes: Sequence[str]) -> "OutputLayout":
        """One softmax over `classes`: a flat, grouped or specialist stage."""
        return cls((Block("", tuple(classes)),))

    @classmethod
    def of_heads(cls, heads: Sequence[tuple[str, Sequence[str]]]) -> "OutputLayout":
        """One softmax per (name, value names) head."""
        return cls(tuple(Block(name, tuple(values)) for name, values in heads))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(block.size for block in self.blocks)

    @property
    def width(self) -> int:
        """Outputs side by side: the model's number of logits."""
        return sum(self.sizes)

    @property
    def num_joint(self) -> int:
        """Joint classes: every combination of one class per block."""
        return int(np.prod(self.sizes))

    @property
    def output_names(self) -> tuple[str, ...]:
        """A name per output: the classes of one block; `head=value` with several."""
        if len(self.blocks) == 1:
            return self.blocks[0].classes
        return tuple(f"{block.name}={value}" for block in self.blocks for value in block.classes)

    # --- the model.json form: one list of output names, and (name, size) per head when there are heads

    def spec_fields(self) -> dict[str, Any]:
        heads = [[block.name, block.size] for block in self.blocks] if len(self.blocks) > 1 else []
        return {"num_classes": self.width, "class_names": list(self.output_names), "heads": heads}

    @classmethod
    def from_spec_fields(cls, class_names: Sequence[str], heads: Sequence[Sequence[Any]]) -> "OutputLayout":
        """The inverse of `spec_fields`: `head=value` names are cut back to their values."""
        if not heads:
            return cls.single(class_names)
        blocks, start = [], 0
        for name, size in heads:
            names = class_names[start:start + int(size)]
            blocks.append(Block(str(name), tuple(value.split("=", 1)[1] for value in names)))
            start += int(size)
        return cls(tuple(blocks))

    # --- targets: N×H in memory, and in files 1-D for one block (as every run has stored them)

    @staticmethod
    def columns(targets: np.ndarray) -> np.ndarray:
        """Targets as N×H, whether stored 1-D (one block) or N×H."""
        targets = np.asarray(targets)
        return targets.reshape(len(targets), -1)

    def stored(self, targets: np.ndarray) -> np.ndarray:
        """Targets as a run's files keep them: a plain vector for one block."""
        return targets[:, 0] if len(self.blocks) == 1 else targets

    def joint(self, targets: Array) -> Array:
        """The joint class of each row (N×H → N); numpy or torch alike."""
        joint = targets[:, 0]
        for column, size in enumerate(self.sizes[1:], start=1):
            joint = joint * size + targets[:, column]
        return joint

    # --- numpy probabilities

    def split(self, probs: np.ndarray) -> list[np.ndarray]:
        """Each block's columns of an output, in order."""
        return np.split(probs, np.cumsum(self.sizes)[:-1], axis=1)

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        """Each block's argmax (N×H)."""
        return np.stack([block.argmax(1) for block in self.split(probs)], axis=1)

    def scores(self, targets: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        """Accuracy and macro-F1 of the joint class (every block right); with several blocks also
        each block's own, under "heads"."""
        return self.label_scores(targets, self.predicted(probs))

    def label_scores(self, targets: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
        """`scores` of predicted block values (N×H) rather than probabilities."""
        result: dict[str, Any] = scores(self.joint(targets), self.joint(predicted), self.num_joint)
        if len(self.blocks) > 1:
            result["heads"] = {block.name: scores(targets[:, column], predicted[:, column], block.size)
                               for column, block in enumerate(self.blocks)}
        return result

    def log_loss(self, targets: np.ndarray, probs: np.ndarray) -> float:
        """Mean negative log-probability of the targets, summed over the blocks."""
        rows = np.arange(len(targets))
        return float(sum(-np.log(np.clip(block, 1e-12, 1.0)[rows, targets[:, column]]).mean()
                         for column, block in enumerate(self.split(probs))))

    # --- torch logits

    def softmax(self, logits: torch.Tensor) -> torch.Tensor:
        """Each block's softmax, side by side, in float32."""
        return torch.cat([block.softmax(1) for block in logits.float().split(self.sizes, 1)], dim=1)

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> int:
        """Rows whose every block's argmax is its target."""
        hits = [block.argmax(1) == column for block, column in zip(logits.split(self.sizes, 1), targets.unbind(1))]
        return int(torch.stack(hits, 1).all(1).sum().item())

    def marginals(self, joint_probs: torch.Tensor) -> torch.Tensor:
        """Joint-class probabilities (N × num_joint) as each block's marginal, side by side: how
        mixed joint targets become each head's mixed target."""
        grid = joint_probs.reshape(len(joint_probs), *self.sizes)
        axes = range(1, len(self.sizes) + 1)
        parts = []
        for axis in axes:
            others = tuple(other for other in axes if other != axis)
            parts.append(grid.sum(dim=others) if others else grid)  # torch sums every axis for dim=()
        return torch.cat(parts, dim=1)
