"""From rows to batches: resizing and augmenting as uint8, normalising a batch at once, loaders."""
import numpy as np
import pytest
import torch

from conftest import shape_image
from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, TrainingOrder, build_transform, make_loader

CPU = torch.device("cpu")


def test_a_batch_is_normalised_as_its_images_one_by_one():
    rng = np.random.default_rng(0)
    images = np.stack([shape_image(label, rng, size=20) for label in (0, 1, 2)])
    transform = build_transform(16, (0.5,), (0.25,))
    dataset = ImageDataset(Items.from_arrays(images, [0, 1, 2]), np.array([0, 1, 2]), transform, channels=1)
    batch, targets, rows = dataset.__getitems__([2, 0])
    assert batch.shape == (2, 1, 16, 16) and batch.is_contiguous() and batch.stride()[1] == 16 * 16
    assert targets.tolist() == [[2], [0]] and rows.tolist() == [2, 0]  # targets are N×H: one column here
    single = transform(images[0][..., None])["image"]
    assert torch.allclose(batch[1], single)
    assert torch.allclose(single, (torch.as_tensor(transform.pixels(images[0][..., None])).permute(2, 0, 1) / 255.0
                                   - 0.5) / 0.25, atol=1e-5)


def test_targets_of_several_blocks_and_no_targets():
    images = np.zeros((3, 4, 4), dtype=np.uint8)
    dataset = ImageDataset(Items.from_arrays(images), np.array([[0, 1], [1, 0], [2, 1]]), build_transform(4, (0.5,),
                                                                                                       (0.5,)), 1)
    assert dataset[1][1].tolist() == [1, 0]
    unlabelled = ImageDataset(Items.from_arrays(images), None, build_transform(4, (0.5,), (0.5,)), 1)
    assert unlabelled.targets.tolist() == [[-1], [-1], [-1]]


def test_loaders_shuffle_by_their_seed_and_a_sampler_needs_each_rows_class():
    images = np.zeros((20, 4, 4), dtype=np.uint8)
    dataset = ImageDataset(Items.from_arrays(images), np.arange(20) % 2, build_transform(4, (0.5,), (0.5,)), 1)

    def order(seed):
        return torch.cat([rows for _, _, rows in make_loader(dataset, 8, workers=0, device=CPU, seed=seed,
                                                               order=TrainingOrder())]).tolist()
    assert order(1) == order(1) != order(2) and sorted(order(1)) == list(range(20))
    with pytest.raises(ValueError, match="needs each row's class"):
        make_loader(dataset, 8, workers=0, device=CPU, order=TrainingOrder(sampler="balanced"))


def test_augmentation_differs_across_workers_yet_repeats():
    rng = np.random.default_rng(0)
    images = np.stack([shape_image(1, rng, size=16)] * 16)
    dataset = ImageDataset(Items.from_arrays(images), None, build_transform(16, (0.5,), (0.5,), "heavy", seed=3), 1)

    def batches():
        loader = make_loader(dataset, 8, workers=2, device=CPU, seed=4)
        return torch.cat([images for images, _, _ in loader])
    first, second = batches(), batches()
    assert torch.equal(first, second)
    assert not torch.equal(first[:8], first[8:])  # the two workers augment the same images differently
