"""Albumentations pipelines: strict construction, crops, flips, small-image policy, pair augmentation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from lit_diffsr.data.transforms import CropTransform, PairAugmentation, SmallImageError, fit_small_image


def test_pipelines_are_strict_and_strict_catches_misspellings():
    for pipeline in (
        CropTransform(32, train=True).pipeline,
        CropTransform(32, train=False, resize=False).pipeline,
        PairAugmentation().pipeline,
    ):
        assert pipeline.strict
        assert all(not step.invalid_args for step in pipeline.transforms)
    # the reason for strict=True: without it albumentations 2.x only warns about a misspelled argument
    with pytest.raises(ValueError, match="probability"):
        A.HorizontalFlip(probability=0.5, strict=True)


def test_resize_then_centre_crop_is_deterministic(random_rgb):
    image = random_rgb(60, 90)
    transform = CropTransform(30, train=False)
    first = transform(image, np.random.default_rng(0))
    assert first.shape == (30, 30, 3)
    np.testing.assert_array_equal(first, transform(image, np.random.default_rng(99)))
    # short side 60 -> 30 halves the image (45 wide); the centre crop starts at column 7
    halved = image.reshape(30, 2, 45, 2, 3).mean(axis=(1, 3))
    assert np.abs(first.astype(float) - halved[:, 7:37]).max() <= 1  # INTER_AREA = block mean


def test_random_crop_and_flip_follow_the_seed(random_rgb):
    image = random_rgb(40, 40)
    transform = CropTransform(16, train=True, resize=False)
    crops = [transform(image, np.random.default_rng(seed)) for seed in range(12)]
    np.testing.assert_array_equal(crops[3], transform(image, np.random.default_rng(3)))
    assert len({crop.tobytes() for crop in crops}) > 8  # positions (and flips) vary with the seed

    def is_native_crop(crop: np.ndarray) -> bool:
        return any(
            np.array_equal(image[top : top + 16, left : left + 16], crop)
            for top in range(25)
            for left in range(25)
        )

    native = [is_native_crop(crop) for crop in crops]
    flipped = [is_native_crop(crop[:, ::-1]) for crop in crops]
    assert all(a or b for a, b in zip(native, flipped, strict=True))
    assert any(flipped) and any(native)
    no_flip = CropTransform(16, train=True, resize=False, random_flip=False)
    assert all(is_native_crop(no_flip(image, np.random.default_rng(seed))) for seed in range(6))


def test_small_image_upscale_or_error(random_rgb):
    small = random_rgb(20, 30)
    upscaled = fit_small_image(small, 40, "upscale", "small.png")
    assert upscaled.shape == (40, 60, 3)
    assert fit_small_image(random_rgb(50, 50), 40, "error", "big.png").shape == (50, 50, 3)  # untouched
    with pytest.raises(SmallImageError, match=r"small\.png.*20x30.*crop size 40"):
        fit_small_image(small, 40, "error", "small.png")
    with pytest.raises(ValueError, match="small_image must be one of"):
        fit_small_image(small, 40, "pad", "small.png")


def test_pair_augmentation_applies_the_same_symmetry_to_both(random_rgb):
    hr = random_rgb(16, 16)
    lr = hr.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3)).astype(np.uint8)  # an exact 4x block average
    seen = set()
    for seed in range(24):
        hr_out, lr_out = PairAugmentation()(hr, lr, np.random.default_rng(seed))
        np.testing.assert_array_equal(
            hr_out.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3)).astype(np.uint8), lr_out
        )
        seen.add(hr_out.tobytes())
    assert len(seen) == 8  # all eight symmetries of the square occur
