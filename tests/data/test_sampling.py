"""Which rows an epoch sees: balanced classes, or at most a cap per class drawn anew."""
import numpy as np
import torch

from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, TrainingOrder, build_transform, make_loader

CPU = torch.device("cpu")


def loader(labels: np.ndarray, sampler: str, cap: int, share: float = 1.0) -> torch.utils.data.DataLoader:
    items = Items.from_arrays(np.zeros((len(labels), 4, 4, 1), dtype=np.uint8), labels, ["a", "b", "c"])
    dataset = ImageDataset(items, labels, build_transform(4, (0.5,), (0.5,)), channels=1)
    return make_loader(dataset, 1000, workers=0, device=CPU,
                       order=TrainingOrder(sampler=sampler, class_cap=cap, labels=labels, share=share))


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


def test_a_share_of_each_epoch_is_drawn_anew_as_a_short_trial_draws_it():
    """A third of each epoch (a trial of six epochs over two passes): 100 of 300 shuffled rows, no
    row twice within an epoch, another third the next; balanced and capped epochs shrink alike."""
    labels = np.repeat([0, 1, 2], [200, 80, 20])
    thirds = loader(labels, "shuffle", 0, share=1 / 3)
    epochs = [np.concatenate([rows.numpy() for _, _, rows in thirds]) for _ in range(3)]
    assert [len(epoch) for epoch in epochs] == [100] * 3 and all(len(set(epoch)) == 100 for epoch in epochs)
    assert len(set(epochs[0]) & set(epochs[1])) < 60 and len(set(np.concatenate(epochs))) > 200
    assert sum(len(rows) for _, _, rows in loader(labels, "balanced", 0, share=0.5)) == 150
    assert sum(len(rows) for _, _, rows in loader(labels, "shuffle", 30, share=0.5)) == 45  # 15 + 15 + 15
