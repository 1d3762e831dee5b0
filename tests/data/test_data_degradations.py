"""Degradations: PIL parity of the resamplers, closed-form checks of blur and noise, masks, pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lit_diffsr.data.datasets import DEMO_PHOTOS
from lit_diffsr.data.degradations import (
    Degradation,
    add_noise,
    center_box_mask,
    downsample,
    freeform_mask,
    from_uint8,
    gaussian_blur,
    jpeg,
    to_uint8,
    uniform_blur,
)
from lit_diffsr.ops.resize import upsample_bicubic

PHOTO_NAMES = ["astronaut", "chelsea", "coffee", "rocket", "china", "flower"]


@pytest.fixture(scope="module")
def photo_crops() -> dict[str, np.ndarray]:
    """A 240 x 240 centre crop (divisible by 2, 3, 4 and 8) of bundled photographs."""
    crops = {}
    for name in PHOTO_NAMES:
        photo = DEMO_PHOTOS[name]()
        top, left = (photo.shape[0] - 240) // 2, (photo.shape[1] - 240) // 2
        crops[name] = np.ascontiguousarray(photo[top : top + 240, left : left + 240])
    return crops


def pil_resize(image: np.ndarray, scale: int, resample: Image.Resampling) -> np.ndarray:
    size = (image.shape[1] // scale, image.shape[0] // scale)
    return np.asarray(Image.fromarray(image).resize(size, resample)).astype(int)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_downsample_matches_pil_within_one_level(photo_crops, scale):
    # PIL works in 8 bits with fixed-point weights and rounds after each of its two passes, so its
    # output can differ from the exact float result by just over one level (measured max 1.03);
    # rounded to 8 bits ours must agree to within one level (1/255) everywhere.
    for name, photo in photo_crops.items():
        ours = to_uint8(downsample(from_uint8(photo), scale, "bicubic")).astype(int)
        reference = pil_resize(photo, scale, Image.Resampling.BICUBIC)
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() <= 1, name
        assert np.abs(ours - reference).mean() < 0.2, name  # measured 0.10-0.15 (85 % identical)


@pytest.mark.parametrize("method", ["area", "box"])
def test_area_and_box_are_block_means_like_pil_box(photo_crops, method):
    photo = photo_crops["astronaut"]
    ours = downsample(from_uint8(photo), 4, method)
    block = from_uint8(photo[4:8, 8:12]).mean(axis=(0, 1))
    np.testing.assert_allclose(ours[1, 2], block, atol=1e-6)
    reference = pil_resize(photo, 4, Image.Resampling.BOX)
    assert np.abs(to_uint8(ours).astype(int) - reference).max() <= 1  # PIL rounds ties differently


def test_downsample_keeps_constants_and_rejects_bad_sizes():
    constant = np.full((12, 12, 3), 0.25, dtype=np.float32)
    np.testing.assert_allclose(downsample(constant, 3, "bicubic"), 0.25, atol=1e-6)  # weights sum to 1
    with pytest.raises(ValueError, match="not divisible by the downsample scale 5"):
        downsample(constant, 5)
    with pytest.raises(ValueError, match="unknown downsample method 'lanczos'"):
        downsample(constant, 2, "lanczos")


def keys_cubic(distance: np.ndarray, a: float) -> np.ndarray:
    """Keys (1981) cubic convolution kernel, written out independently of the library code."""
    d = np.abs(distance)
    return np.where(
        d <= 1,
        (a + 2) * d**3 - (a + 3) * d**2 + 1,
        np.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, 0),
    )


def test_upsample_bicubic_is_keys_cubic_with_a_minus_three_quarters_and_clamps():
    # PyTorch's bicubic uses a = -0.75 (as OpenCV), not PIL's -0.5. Away from the borders output
    # pixel x_out samples the input at x_in = (x_out + 0.5) / r - 0.5 (align_corners=False).
    signal = np.random.default_rng(0).uniform(-0.5, 0.5, 16)
    up = upsample_bicubic(torch.from_numpy(np.tile(signal, (4, 1)))[None, None], 2)
    assert up.shape == (1, 1, 8, 32)
    x_in = (np.arange(32) + 0.5) / 2 - 0.5
    taps = np.arange(16)
    expected = (keys_cubic(x_in[:, None] - taps[None, :], -0.75) * signal[None, :]).sum(axis=1)
    np.testing.assert_allclose(up[0, 0, 2].numpy()[4:-4], expected[4:-4], atol=1e-12)
    steep = torch.tensor([[[[-1.0, 1.0, -1.0, 1.0]]]]).expand(1, 1, 4, 4)
    overshoot = torch.nn.functional.interpolate(steep, scale_factor=2, mode="bicubic", align_corners=False)
    assert overshoot.abs().max() > 1  # bicubic rings ...
    assert upsample_bicubic(steep, 2).abs().max() <= 1  # ... and the helper clamps


def test_gaussian_blur_impulse_response_has_variance_sigma_squared():
    # The sampled Gaussian with sigma >= 1, truncated at 6 sigma, has discrete variance sigma² up to
    # ~1e-7 (Poisson summation), so the blurred impulse's second moment must equal sigma².
    sigma = 1.5
    impulse = np.zeros((41, 41, 1), dtype=np.float32)
    impulse[20, 20] = 1.0
    response = gaussian_blur(impulse, sigma, kernel_size=19)[:, :, 0]
    offsets = np.arange(41) - 20
    assert response.sum() == pytest.approx(1.0, abs=1e-5)
    assert (response.sum(axis=0) * offsets**2).sum() == pytest.approx(sigma**2, rel=1e-4)
    assert (response.sum(axis=1) * offsets**2).sum() == pytest.approx(sigma**2, rel=1e-4)
    assert gaussian_blur(impulse, sigma).shape == impulse.shape  # default kernel size
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        gaussian_blur(impulse, sigma, kernel_size=4)


def test_uniform_blur_spreads_an_impulse_over_a_box():
    impulse = np.zeros((9, 9, 1), dtype=np.float32)
    impulse[4, 4] = 1.0
    response = uniform_blur(impulse, 3)[:, :, 0]
    expected = np.zeros((9, 9))
    expected[3:6, 3:6] = 1.0 / 9.0
    np.testing.assert_allclose(response, expected, atol=1e-7)


def test_add_noise_has_the_requested_standard_deviation_and_is_seeded():
    # 12288 samples: the sample std has relative standard error 1/sqrt(2n) = 0.6 %; 3 % is 5 s.e.
    image = np.zeros((64, 64, 3), dtype=np.float32)
    noisy = add_noise(image, 0.1, np.random.default_rng(0), clip=False)
    assert noisy.std() == pytest.approx(0.1, rel=0.03)
    np.testing.assert_array_equal(noisy, add_noise(image, 0.1, np.random.default_rng(0), clip=False))
    assert add_noise(np.ones_like(image), 0.5, np.random.default_rng(1)).max() <= 1.0


def test_jpeg_changes_the_image_more_at_low_quality(photo_crops):
    photo = from_uint8(photo_crops["chelsea"][:64, :64])
    error_low = np.abs(jpeg(photo, 10) - photo).mean()
    error_high = np.abs(jpeg(photo, 90) - photo).mean()
    assert error_low > 2 * error_high > 0
    assert jpeg(photo, 10).dtype == np.float32 and jpeg(photo, 10).shape == photo.shape


def test_center_box_mask_hides_the_centre():
    mask = center_box_mask(64, 48, 0.5)
    assert mask.dtype == np.float32 and mask.shape == (64, 48)
    assert (mask == 0).sum() == 32 * 24
    assert mask[32, 24] == 0 and mask[0, 0] == 1 and mask[63, 47] == 1


def test_freeform_mask_coverage_is_within_range():
    for seed in range(20):
        mask = freeform_mask(64, 64, (0.1, 0.3), np.random.default_rng(seed))
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert 0.1 <= (mask == 0).mean() <= 0.3, seed
    np.testing.assert_array_equal(
        freeform_mask(32, 32, (0.2, 0.4), np.random.default_rng(5)),
        freeform_mask(32, 32, (0.2, 0.4), np.random.default_rng(5)),
    )


def test_pipeline_from_the_config_example():
    degradation = Degradation(
        [
            {"type": "gaussian_blur", "sigma": [0.4, 0.6], "kernel_size": 3, "prob": 0.5},
            {"type": "downsample", "scale": 4, "method": "bicubic"},
            {"type": "jpeg", "quality": 10},
            {"type": "mask", "kind": "freeform", "coverage": [0.1, 0.3]},
        ]
    )
    assert degradation.scale == 4 and degradation.has_mask
    image = from_uint8(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    result = degradation(image, np.random.default_rng(3))
    assert result.image.shape == (16, 16, 3) and result.image.dtype == np.float32
    assert result.mask.shape == (16, 16) and 0.1 <= (result.mask == 0).mean() <= 0.3
    assert np.all(result.image[result.mask == 0] == 0.0)  # missing pixels filled with 0 (mid-grey)
    again = degradation(image, np.random.default_rng(3))
    np.testing.assert_array_equal(result.image, again.image)


def test_blur_sigma_range_and_probability():
    degradation = Degradation([{"type": "gaussian_blur", "sigma": [0.4, 0.6], "kernel_size": 3, "prob": 0.5}])
    image = from_uint8(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    rng = np.random.default_rng(0)
    sigmas = []
    for _ in range(400):
        result = degradation(image, rng)
        if result.applied:
            sigma = result.applied[0]["sigma"]
            sigmas.append(sigma)
            np.testing.assert_allclose(result.image, gaussian_blur(image, sigma, 3), atol=1e-6)
        else:
            np.testing.assert_array_equal(result.image, image)
    # 400 Bernoulli(0.5) draws: standard deviation 0.025; 0.1 is four of them.
    assert abs(len(sigmas) / 400 - 0.5) < 0.1
    assert 0.4 <= min(sigmas) and max(sigmas) <= 0.6
    assert max(sigmas) - min(sigmas) > 0.15  # really a range, not a constant


def test_integer_range_and_stacked_downsamples():
    degradation = Degradation(
        [
            {"type": "downsample", "scale": 2},
            {"type": "downsample", "scale": 2, "method": "area"},
            {"type": "jpeg", "quality": [5, 7]},
        ]
    )
    assert degradation.scale == 4
    qualities = {
        degradation(np.zeros((8, 8, 3), np.float32), np.random.default_rng(s)).applied[2]["quality"]
        for s in range(40)
    }
    assert qualities == {5, 6, 7}


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"type": "sharpen"}], "unknown type 'sharpen'; allowed types: gaussian_blur, uniform_blur"),
        (
            [{"type": "jpeg", "quality": 10, "qualty": 5}],
            "unknown key 'qualty'; allowed keys: type, prob, quality",
        ),
        (
            [{"type": "gaussian_blur", "sigma": 1, "kernel_size": [3, 5]}],
            "'kernel_size' takes a single value",
        ),
        ([{"type": "gaussian_blur"}], "missing required key 'sigma'"),
        ([{"type": "downsample", "scale": 4, "prob": 0.5}], "'prob' is not allowed for downsample"),
        ([{"type": "downsample", "scale": 4, "method": "nearest"}], "unknown method 'nearest'"),
        ([{"type": "mask", "kind": "box"}], "unknown mask kind 'box'"),
        (
            [{"type": "mask", "kind": "center"}, {"type": "downsample", "scale": 2}],
            "cannot follow a mask step",
        ),
        ([{"type": "noise", "sigma": 0.1, "prob": 2}], "prob must be in"),
    ],
)
def test_bad_configs_raise_naming_the_key(steps, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        Degradation(steps)
