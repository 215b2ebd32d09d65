import numpy as np
import pytest
from PIL import Image

from hierclf.data.images import decode_image
from hierclf.errors import DataError


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "CMYK"])
def test_every_mode_decodes_to_rgb_uint8(tmp_path, mode):
    grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))
    image = Image.fromarray(grey, mode="L")
    if mode == "I;16":
        image = Image.fromarray(grey.astype(np.uint16) * 257)
        assert image.mode.startswith("I;16")
    elif mode != "L":
        image = image.convert(mode)
    suffix = ".tif" if mode in ("I", "F", "CMYK") else ".png"
    path = tmp_path / f"image{suffix}"
    image.save(path)
    rgb = decode_image(path, 3)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    if mode not in ("CMYK",):
        # the gradient survives whatever the storage: dark on the left, bright on the right
        assert rgb[0, 0].max() < 20 and rgb[0, -1].min() > 220
    one = decode_image(path, 1)
    assert one.shape == (16, 16, 1)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "clear.png")
    assert (decode_image(tmp_path / "clear.png") == 255).all()


def test_exif_rotation_is_applied(tmp_path):
    pixels = np.zeros((2, 6, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert decode_image(tmp_path / "rotated.jpg").shape == (6, 2, 3)


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png cannot be decoded"):
        decode_image(broken)
    truncated = tmp_path / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.jpg"):
        decode_image(truncated)
    with pytest.raises(DataError, match="gone.png does not exist"):
        decode_image(tmp_path / "gone.png")


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_large_image_is_decoded_reduced_but_never_below_the_asked_side(tmp_path, suffix):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, size=(50, 60, 3), dtype=np.uint8)
    large = np.asarray(Image.fromarray(base).resize((1200, 1000), Image.NEAREST))
    Image.fromarray(large).save(tmp_path / f"large{suffix}", quality=95)
    full = decode_image(tmp_path / f"large{suffix}")
    reduced = decode_image(tmp_path / f"large{suffix}", max_side=100)
    assert full.shape == (1000, 1200, 3)
    assert 100 <= min(reduced.shape[:2]) < 200 and reduced.shape[0] * 6 == reduced.shape[1] * 5
    shrunk = np.asarray(Image.fromarray(full).resize(reduced.shape[1::-1], Image.BOX), dtype=np.float64)
    assert np.abs(shrunk - reduced).mean() < 12  # the same picture, smaller
    small = decode_image(tmp_path / f"large{suffix}", max_side=800)  # 1000 // 800 = 1: nothing to gain
    assert min(small.shape[:2]) >= 800


def test_a_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    Image.new("L", (120, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 12,000 pixels: over twice the limit, as a real bomb is
    with pytest.raises(DataError, match=r"image .*bomb.png is too large to decode safely \(Image size"):
        decode_image(tmp_path / "bomb.png")


def test_linked_folders_are_followed_each_real_folder_read_once(tmp_path, caplog):
    """A linked subfolder's images are rows (they were left out without a word); a link back up
    the tree, or a second link to a folder already read, is named and read no more."""
    import logging

    from hierclf.data.images import images_under

    def folder_of_images(path, count):
        path.mkdir(parents=True)
        for index in range(count):
            Image.fromarray(np.full((4, 4), index, dtype=np.uint8)).save(path / f"{index}.png")
        return path

    root = folder_of_images(tmp_path / "images" / "here", 3).parent
    outside = folder_of_images(tmp_path / "elsewhere", 5)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "here" / "loop").symlink_to(root, target_is_directory=True)
    (root / "again").symlink_to(outside, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="hierclf"):
        found = images_under(root)
    assert len(found) == 8 and {path.parent.name for path in found} == {"here", "again"}  # read in name order
    assert "2 linked folders left out" in caplog.text and "loop" in caplog.text and "linked" in caplog.text
