"""The engines predict can run a stage's fold vote with, what each can do, and how one is asked
for: no torch here, so the command line offers and checks them before anything heavy is imported."""
from dataclasses import dataclass

ENGINES = ("torch", "onnxruntime", "openvino")
ON_CPU = frozenset({"onnxruntime", "openvino"})
"""The engines that run on the CPU whatever the device: their fold models load there."""
QUANTISING = frozenset({"onnxruntime", "openvino"})
"""The engines that can run a stage in int8."""
PRECISIONS = ("f32", "bf16")
"""The float precisions an engine may be asked to compute in."""
IN_BF16 = frozenset({"openvino"})
"""The engines that can compute in bf16 (`precision`)."""


@dataclass(frozen=True)
class EngineChoice:
    """The engine a stage's vote runs on, as `make_vote` takes it: its name, its threads (0: one per
    core), the precision it computes in, and whether torch lays images out channels_last."""

    name: str = "torch"
    threads: int = 0
    precision: str = "f32"
    channels_last: bool = False
