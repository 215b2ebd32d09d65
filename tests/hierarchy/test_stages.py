"""A stage's description: one loss per output block."""
import numpy as np
import pytest

from hierclf.hierarchy.layout import OutputLayout
from hierclf.recipe.schema import HeadConfig, LossConfig, StageConfig
from hierclf.hierarchy.stage import Stage, single_loss


def test_a_single_blocks_loss_is_the_stages_own_at_weight_one():
    loss = single_loss(StageConfig(loss="focal", focal_gamma=1.5, label_smoothing=0.2, class_weights="balanced"))
    assert loss == HeadConfig(loss="focal", focal_gamma=1.5, label_smoothing=0.2, class_weights="balanced")
    assert loss.weight_at(1) == loss.weight_at(50) == 1.0
    assert isinstance(loss, LossConfig)


def test_a_stage_needs_one_loss_per_block():
    layout = OutputLayout.of_heads([("a", "xy"), ("b", "xyz")])
    with pytest.raises(ValueError, match="one loss per output block"):
        Stage(name="coarse", key="coarse", config=StageConfig(), layout=layout, losses=(HeadConfig(),),
              loss_keys=("coarse",), targets=lambda labels: np.zeros((len(labels), 2)))
