"""The resizes behind the prepared datasets, against PIL directly and against closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lit_diffsr.data.prepare.resize import (
    bicubic_downscale,
    center_crop_square,
    crop_to_multiple,
    resize_square,
)


def as_int(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


@pytest.fixture
def landscape() -> Image.Image:
    """A 200 x 150 photo-like image (wider than tall, so the centre crop matters)."""
    y, x = np.mgrid[0:150, 0:200] / 200
    rng = np.random.default_rng(1)
    channels = [
        127.5 + 60 * np.sin(7 * x + c) * np.cos(4 * y - c) + rng.normal(0, 6, x.shape) for c in range(3)
    ]
    return Image.fromarray(np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8))


def test_center_crop_takes_the_middle_square(landscape: Image.Image) -> None:
    crop = center_crop_square(landscape)
    assert crop.size == (150, 150)
    np.testing.assert_array_equal(as_int(crop), as_int(landscape)[:, 25:175])  # (200 - 150) // 2 = 25


def test_resize_square_is_pils_box_halvings_then_bicubic(landscape: Image.Image) -> None:
    """The ADM recipe written out by hand for 150 x 150 -> 32: halve while side >= 64 (150 -> 75 -> 37)."""
    square = landscape.crop((25, 0, 175, 150))
    halved_twice = square.resize((75, 75), Image.Resampling.BOX).resize((37, 37), Image.Resampling.BOX)
    expected = halved_twice.resize((32, 32), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(as_int(resize_square(landscape, 32)), as_int(expected))
    # 150 -> 64: one halving (150 >= 128) to 75, then bicubic 75 -> 64.
    expected = square.resize((75, 75), Image.Resampling.BOX).resize((64, 64), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(as_int(resize_square(landscape, 64)), as_int(expected))


def test_power_of_two_downscale_is_the_block_mean() -> None:
    """256 -> 32 is three BOX halvings, i.e. the mean of each 8 x 8 block.

    Tolerance 3: PIL resizes in two separable passes, each rounding to uint8 (error <= 0.5), so each
    halving adds at most 1 grey level and three of them at most 3.
    """
    rng = np.random.default_rng(2)
    source = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    block_mean = source.reshape(32, 8, 32, 8, 3).mean(axis=(1, 3))
    result = as_int(resize_square(Image.fromarray(source), 32))
    assert np.abs(result - block_mean).max() <= 3


def test_resize_square_is_anti_aliased_and_close_to_a_single_bicubic(landscape: Image.Image) -> None:
    # A one-pixel checkerboard has no content below the new Nyquist limit: an anti-aliased resize
    # must give flat grey (the block mean, 127.5, rounded), where point sampling gives black.
    board = Image.fromarray((np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)).convert("RGB")
    assert np.abs(as_int(resize_square(board, 32)) - 127.5).max() <= 1
    assert as_int(board.resize((32, 32), Image.Resampling.NEAREST)).max() == 0
    # PIL's one-shot bicubic is anti-aliased too; both are low-pass filters of the same bandwidth and
    # differ only in kernel shape, so on a photo they agree to within ~1% of the range on average.
    single = as_int(center_crop_square(landscape).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.abs(as_int(resize_square(landscape, 32)) - single).mean() < 3


def test_small_sources_are_upsampled_to_the_target(landscape: Image.Image) -> None:
    small = landscape.resize((30, 20))
    result = resize_square(small, 32)
    expected = small.crop((5, 0, 25, 20)).resize((32, 32), Image.Resampling.BICUBIC)
    assert result.size == (32, 32)
    np.testing.assert_array_equal(as_int(result), as_int(expected))


def test_modcrop_and_bicubic_lr_match_pil(landscape: Image.Image) -> None:
    odd = landscape.crop((0, 0, 181, 125))  # neither side a multiple of 4
    cropped = crop_to_multiple(odd, 4)
    assert cropped.size == (180, 124)
    np.testing.assert_array_equal(as_int(cropped), as_int(odd)[:124, :180])
    lr = bicubic_downscale(odd, 4)
    assert lr.size == (45, 31)
    np.testing.assert_array_equal(as_int(lr), as_int(cropped.resize((45, 31), Image.Resampling.BICUBIC)))


def test_bad_sizes_are_rejected(landscape: Image.Image) -> None:
    with pytest.raises(ValueError, match="size must be a positive"):
        resize_square(landscape, 0)
    with pytest.raises(ValueError, match="smaller than the scale"):
        crop_to_multiple(landscape.resize((3, 3)), 4)
