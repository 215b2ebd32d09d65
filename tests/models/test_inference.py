"""Soft votes over a loader: models, blocks and test-time views."""
import numpy as np
import torch

from conftest import shape_image
from hierclf.data import Items
from hierclf.data.dataset import ImageDataset, build_transform, make_loader
from hierclf.models.inference import soft_vote
from hierclf.hierarchy.layout import OutputLayout
from hierclf.models.factory import create_model
from hierclf.recipe.schema import StageConfig
from hierclf.data.tta import View

CPU = torch.device("cpu")
ABC = OutputLayout.single(("a", "b", "c"))
TINY = StageConfig(model="test_resnet", img_size=16, in_chans=1)


def loader_of(images: np.ndarray, batch_size: int = 8) -> torch.utils.data.DataLoader:
    items = Items.from_arrays(images, np.zeros(len(images), dtype=np.int64), ["a", "b", "c"])
    dataset = ImageDataset(items, None, build_transform(16, (0.5,), (0.5,)), channels=1)
    return make_loader(dataset, batch_size, workers=0, device=CPU)


def images(count: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([shape_image(label % 3, rng) for label in range(count)])[..., None]


def test_a_soft_vote_is_the_mean_of_the_models_softmax_in_row_order():
    first, _ = create_model(TINY, ABC, seed=0)
    second, _ = create_model(TINY, ABC, seed=1)
    batch = images(11)
    probs, rows = soft_vote([first, second], loader_of(batch, batch_size=4), CPU, ABC)
    assert rows.tolist() == list(range(11)) and probs.dtype == np.float32
    tensor = loader_of(batch, batch_size=11).dataset.__getitems__(list(range(11)))[0]
    with torch.no_grad():
        expected = (torch.softmax(first.eval()(tensor), 1) + torch.softmax(second.eval()(tensor), 1)) / 2
    assert np.allclose(probs, expected.numpy(), atol=1e-6)


def test_tta_averages_the_views():
    model, _ = create_model(TINY, ABC, seed=0)
    batch = images()
    plain, _ = soft_vote([model], loader_of(batch), CPU, ABC)
    flipped, _ = soft_vote([model], loader_of(batch[:, :, ::-1].copy()), CPU, ABC)
    turned, _ = soft_vote([model], loader_of(np.rot90(batch, 1, axes=(1, 2)).copy()), CPU, ABC)
    both, _ = soft_vote([model], loader_of(batch), CPU, ABC, tta=[View("hflip"), View("rot90")])
    assert np.allclose(both, (plain + flipped + turned) / 3, atol=1e-5)
    assert not np.allclose(both, plain, atol=1e-4)


def test_each_block_of_a_heads_model_is_its_own_distribution():
    layout = OutputLayout.of_heads([("x", ("0", "1")), ("y", ("0", "1", "2"))])
    model, _ = create_model(TINY, layout, seed=0)
    probs, _ = soft_vote([model], loader_of(images()), CPU, layout)
    assert probs.shape == (5, 5) and np.allclose(probs[:, :2].sum(1), 1) and np.allclose(probs[:, 2:].sum(1), 1)

