"""The built-in datasets, written in the competition layout."""
import numpy as np
import pytest
from PIL import Image

from hierclf.data import load_input_items, load_training_items
from hierclf.data.builtin import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, write_digits, write_fashion_mnist
from hierclf.errors import DataError
from hierclf.recipe.schema import DataConfig


def test_builtin_digits_layout(tmp_path):
    out = write_digits(tmp_path / "digits")
    train = load_training_items(DataConfig(csv=str(out / "train.csv")))
    test = load_input_items(out / "test.csv", class_names=train.class_names)
    assert len(train) + len(test) == 1797 and test.has_labels
    assert train.class_names == tuple("0123456789")
    assert not set(train.ids) & set(test.ids)
    assert Image.open(train.paths[0]).size == (8, 8)
    assert write_digits(tmp_path / "digits") == out  # already there: kept, not rewritten


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_builtin_fashion_mnist_subset(tmp_path):
    out = write_fashion_mnist(tmp_path / "fashion", train_limit=200, test_limit=100)
    train = load_training_items(DataConfig(csv=str(out / "train.csv"), class_names=FASHION_MNIST_CLASSES))
    assert len(train) == 200 and np.bincount(train.labels).min() == 20  # stratified
    assert Image.open(train.paths[0]).size == (28, 28)


def test_fashion_mnist_missing_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install -y dataset-fashion-mnist"):
        write_fashion_mnist(tmp_path / "out", source=tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()
