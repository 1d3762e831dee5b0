"""Image discovery and decoding: formats, greyscale, transparency, 16 bit, corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lit_diffsr.data.io import ImageReadError, find_images, load_rgb, read_image_size


def test_find_images_filters_extensions_sorts_and_recurses(tmp_path, random_rgb, write_image):
    image = random_rgb(8, 8)
    write_image(tmp_path / "b.PNG", image)
    write_image(tmp_path / "a.jpeg", image)
    write_image(tmp_path / "sub" / "c.webp", image)
    write_image(tmp_path / ".hidden" / "d.png", image)
    (tmp_path / "notes.txt").write_text("not an image")
    names = [path.relative_to(tmp_path).as_posix() for path in find_images(tmp_path)]
    assert names == ["a.jpeg", "b.PNG", "sub/c.webp"]
    assert [path.name for path in find_images(tmp_path, recursive=False)] == ["a.jpeg", "b.PNG"]


def test_find_images_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_images(tmp_path / "nowhere")


def test_load_png_and_jpeg_roundtrip(tmp_path, random_rgb, write_image):
    image = random_rgb(16, 24)
    assert np.array_equal(load_rgb(write_image(tmp_path / "x.png", image)), image)
    smooth = np.broadcast_to(np.linspace(0, 250, 24, dtype=np.uint8)[None, :, None], (16, 24, 3)).copy()
    decoded = load_rgb(write_image(tmp_path / "x.jpg", smooth, quality=95))
    assert decoded.shape == (16, 24, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - smooth).mean() < 3  # lossy, but the same picture


def test_greyscale_becomes_three_equal_channels(tmp_path, write_image):
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    rgb = load_rgb(write_image(tmp_path / "grey.png", grey))
    assert rgb.shape == (8, 8, 3)
    assert all(np.array_equal(rgb[:, :, c], grey) for c in range(3))


def test_rgba_is_composited_on_white(tmp_path, write_image):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque: unchanged
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: white
    rgba[1, 0] = (0, 0, 0, 128)  # half black over white: 255 * (1 - 128/255) = 127
    rgb = load_rgb(write_image(tmp_path / "alpha.png", rgba))
    assert rgb[0, 0].tolist() == [10, 20, 30]
    assert rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0].tolist() == [127, 127, 127]


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 257 * 77], [65535, 32896]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")  # really a 16-bit file
    rgb = load_rgb(path)
    assert rgb[:, :, 0].tolist() == [[0, 77], [255, 128]]  # 32896 / 257 = 128.0


def test_corrupt_and_truncated_files_raise_naming_the_file(tmp_path, random_rgb, write_image):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    with pytest.raises(ImageReadError, match="garbage.png"):
        load_rgb(garbage)
    full = write_image(tmp_path / "full.jpg", random_rgb(64, 64)).read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageReadError, match="truncated.jpg"):
        load_rgb(truncated)


def test_read_image_size_is_height_width(tmp_path, random_rgb, write_image):
    assert read_image_size(write_image(tmp_path / "x.png", random_rgb(5, 7))) == (5, 7)
