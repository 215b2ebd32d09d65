"""Temperature scaling: the temperature that minimises the log-loss, found and applied."""
import numpy as np
import pytest

from hierclf.combine.temperature import fit_temperature, scaled, scaled_blocks
from hierclf.metrics import calibration


def test_an_over_confident_model_is_softened_and_its_log_likelihood_improves():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 2000)
    logits = rng.normal(0, 1, (2000, 4))
    logits[np.arange(2000), targets] += 1.0  # right about 60 % of the time…
    honest = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    over_confident = scaled(honest, 1 / 4)  # …but four times too sure of itself
    temperature = fit_temperature(over_confident, targets)
    assert temperature == pytest.approx(4.0, rel=0.15)
    before, after = calibration(targets, over_confident), calibration(targets, scaled(over_confident, temperature))
    assert after["nll"] < before["nll"] - 0.3 and after["ece"] < before["ece"] / 3
    assert np.array_equal(scaled(over_confident, temperature).argmax(1), over_confident.argmax(1))


def test_each_block_of_an_output_is_scaled_by_its_own_temperature():
    rng = np.random.default_rng(1)
    side_by_side = np.concatenate([rng.dirichlet(np.ones(3), 4), rng.dirichlet(np.ones(2), 4)], axis=1)
    both = scaled_blocks(side_by_side, (3, 2), (2.0, 0.5))
    assert both.dtype == np.float32
    assert np.allclose(both[:, :3], scaled(side_by_side[:, :3], 2.0))
    assert np.allclose(both[:, 3:], scaled(side_by_side[:, 3:], 0.5))
