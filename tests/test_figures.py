"""Figures drawn without pyplot: a notebook's backend and figures are left alone."""
import matplotlib
import numpy as np
from PIL import Image

from hierclf.figures import confusion_figure, reliability_figure
from hierclf.run.files import save_png


def test_the_confusion_png_is_written_without_touching_pyplot(tmp_path):
    import matplotlib.pyplot as plt

    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    save_png(tmp_path / "confusion.png", confusion_figure(np.array([[5, 1], [0, 4]]), ("a", "b"), "title"))
    assert matplotlib.get_backend() == backend and plt.get_fignums() == figures
    with Image.open(tmp_path / "confusion.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
    assert [p.name for p in tmp_path.iterdir()] == ["confusion.png"]


def test_the_reliability_diagram_is_written_from_the_bins(tmp_path):
    import matplotlib.pyplot as plt

    from hierclf.metrics import reliability

    figures = plt.get_fignums()
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    binned = reliability(np.array([0, 1, 1, 1]), probs, bins=10)
    assert binned["counts"].sum() == 4 and binned["counts"][8] == 1 and binned["accuracy"][8] == 1.0
    save_png(tmp_path / "reliability.png", reliability_figure(binned, "title"))
    assert plt.get_fignums() == figures
    with Image.open(tmp_path / "reliability.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
