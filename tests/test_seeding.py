"""Seeded randomness that leaves the process's global generators as they were."""
import numpy as np
import torch

from hierclf.seeding import NumpyState, derive_seed, torch_seeded


def test_torch_seeded_repeats_its_draws_and_restores_the_global_generator():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with torch_seeded(7):
        first = torch.rand(3)
    assert torch.equal(torch.rand(3), expected_next)  # as if the block had not run
    with torch_seeded(7):
        assert torch.equal(torch.rand(3), first)


def test_a_numpy_state_of_its_own_draws_like_np_random_seed_and_keeps_going():
    np.random.seed(5)
    reference = np.random.rand(4)
    np.random.seed(99)
    outside = np.random.rand(2)
    np.random.seed(99)
    state = NumpyState(5)
    with state.active():
        first = np.random.rand(2)
    with state.active():
        second = np.random.rand(2)
    assert np.array_equal(np.concatenate([first, second]), reference)  # one stream across uses
    assert np.array_equal(np.random.rand(2), outside)  # the global stream untouched


def test_derived_seeds_are_fixed_and_distinct():
    assert derive_seed(3, 1) == derive_seed(3, 1)
    assert len({derive_seed(3, 1), derive_seed(3, 2), derive_seed(4, 1), 3}) == 4
