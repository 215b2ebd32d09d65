"""Which rows an epoch sees: balanced classes, or at most a cap per class drawn anew."""
import numpy as np
import torch

from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, TrainingOrder, build_transform, make_loader

CPU = torch.device("cpu")


def loader(labels: np.ndarray, sampler: str, cap: int) -> torch.utils.data.DataLoader:
    items = Items.from_arrays(np.zeros((len(labels), 4, 4, 1), dtype=np.uint8), labels, ["a", "b", "c"])
    dataset = ImageDataset(items, labels, build_transform(4, (0.5,), (0.5,)), channels=1)
    return make_loader(dataset, 1000, workers=0, device=CPU,
                       order=TrainingOrder(sampler=sampler, class_cap=cap, labels=labels))


def test_balanced_sampler_draws_every_class_about_equally():
    labels = np.repeat([0, 1, 2], [800, 150, 50])
    drawn = np.concatenate([targets[:, 0].numpy() for _, targets, _ in loader(labels, "balanced", 0)])
    counts = np.bincount(drawn, minlength=3)
    assert len(drawn) == 1000 and (np.abs(counts - 1000 / 3) < 60).all(), counts  # shuffled: 800/150/50
    capped = np.concatenate([targets[:, 0].numpy() for _, targets, _ in loader(labels, "balanced", 40)])
    assert len(capped) == 120


def test_class_cap_takes_at_most_cap_rows_of_each_class_anew_each_epoch():
    labels = np.repeat([0, 1, 2], [300, 40, 10])
    capped = loader(labels, "shuffle", 30)
    drawn = np.concatenate([targets[:, 0].numpy() for _, targets, _ in capped])
    assert np.bincount(drawn, minlength=3).tolist() == [30, 30, 10]
    epochs = [set(np.concatenate([rows.numpy() for _, _, rows in capped]).tolist()) for _ in range(2)]
    assert len(epochs[0]) == 70 and epochs[0] != epochs[1]  # no row twice; another subset next epoch
