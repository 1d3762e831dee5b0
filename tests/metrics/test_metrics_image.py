"""PSNR, SSIM, the BT.601 Y channel and SR consistency against hand computations in numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lit_diffsr.metrics.image import downsample, psnr, rgb_to_y, sr_consistency, ssim


def uint8_pair(seed: int = 0, shape=(2, 3, 24, 32)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = rng.integers(0, 256, shape)
    pred = np.clip(target + rng.integers(-20, 21, shape), 0, 255)
    return pred.astype(np.float64), target.astype(np.float64)


def numpy_y(rgb_255: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr's Y for NCHW values in [0, 255]: 16 + (65.481 R + 128.553 G + 24.966 B) / 255."""
    r, g, b = rgb_255[:, 0], rgb_255[:, 1], rgb_255[:, 2]
    return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255


def numpy_psnr(pred: np.ndarray, target: np.ndarray, peak: float) -> np.ndarray:
    mse = ((pred - target) ** 2).reshape(len(pred), -1).mean(axis=1)
    return 10 * np.log10(peak**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    return np.outer(g, g) / np.outer(g, g).sum()


def numpy_ssim(pred: np.ndarray, target: np.ndarray, peak: float) -> np.ndarray:
    """Wang et al. 2004, eq. 13, on 'valid' 11x11 Gaussian windows, mean over positions and channels."""
    window = gaussian_window()
    windows = lambda x: np.lib.stride_tricks.sliding_window_view(x, (11, 11), axis=(-2, -1))  # 'valid'
    filt = lambda x: np.einsum("...ij,ij->...", windows(x), window)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = filt(pred), filt(target)
    var_x, var_y = filt(pred * pred) - mu_x**2, filt(target * target) - mu_y**2
    cov = filt(pred * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.reshape(len(pred), -1).mean(axis=1)


def test_psnr_matches_numpy_in_every_data_range():
    pred, target = uint8_pair()
    expected = numpy_psnr(pred, target, 255.0)
    as_tensor = lambda x, scale, offset: torch.from_numpy(x / scale + offset)
    # the same images as [0, 255], [0, 1] and the framework's [-1, 1]: one PSNR, per image
    for scale, offset, data_range in ((1, 0, 255.0), (255, 0, 1.0), (127.5, -1, (-1.0, 1.0))):
        values = psnr(as_tensor(pred, scale, offset), as_tensor(target, scale, offset), data_range)
        assert values.shape == (2,)
        np.testing.assert_allclose(values.numpy(), expected, rtol=1e-5)  # float32 output


def test_psnr_of_a_constant_offset_is_closed_form():
    target = torch.full((1, 3, 16, 16), 0.25)
    # PSNR = 10 log10(1 / d^2) for an error d everywhere, on [0, 1] images
    assert psnr(target + 0.1, target, 1.0).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(target, target, 1.0).item() == math.inf


def test_wrong_data_range_is_an_error_naming_the_input():
    pred, target = uint8_pair()
    with pytest.raises(ValueError, match="pred has values in .* data_range=1.0"):
        psnr(torch.from_numpy(pred), torch.from_numpy(target), 1.0)
    with pytest.raises(ValueError, match="data_range must be"):
        ssim(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), (1.0, -1.0))


def test_rgb_to_y_follows_matlab_rgb2ycbcr():
    colours = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]).view(5, 3, 1, 1)
    expected = torch.tensor([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966]).view(5, 1, 1, 1)
    torch.testing.assert_close(rgb_to_y(colours) * 255, expected, rtol=0, atol=1e-4)
    torch.testing.assert_close(rgb_to_y(colours * 255, data_range=255.0), expected, rtol=0, atol=1e-4)
    grey = torch.rand(2, 1, 4, 4)
    assert rgb_to_y(grey) is grey  # one channel is already luminance
    with pytest.raises(ValueError, match="3 \\(RGB\\) or 1"):
        rgb_to_y(torch.zeros(1, 4, 2, 2))


def test_y_channel_psnr_and_ssim_match_numpy():
    pred, target = uint8_pair(seed=1)
    pred_t, target_t = torch.from_numpy(pred / 127.5 - 1), torch.from_numpy(target / 127.5 - 1)
    # Y has peak 255 on the 8-bit scale (the convention), though it only spans [16, 235]
    expected_psnr = numpy_psnr(numpy_y(pred), numpy_y(target), 255.0)
    np.testing.assert_allclose(
        psnr(pred_t, target_t, (-1.0, 1.0), y_channel=True).numpy(), expected_psnr, rtol=1e-5
    )
    expected_ssim = numpy_ssim(numpy_y(pred)[:, None], numpy_y(target)[:, None], 255.0)
    np.testing.assert_allclose(
        ssim(pred_t, target_t, (-1.0, 1.0), y_channel=True).numpy(), expected_ssim, rtol=1e-5
    )


def test_rgb_ssim_matches_numpy_and_is_one_for_identical_images():
    pred, target = uint8_pair(seed=2, shape=(3, 3, 30, 26))
    values = ssim(torch.from_numpy(pred), torch.from_numpy(target), 255.0)
    np.testing.assert_allclose(values.numpy(), numpy_ssim(pred, target, 255.0), rtol=1e-5)
    same = torch.from_numpy(target)
    np.testing.assert_allclose(ssim(same, same, 255.0).numpy(), 1.0, rtol=1e-6)
    assert values.max() < 0.99  # the noisy pair is measurably different


def test_shave_drops_exactly_the_border():
    target = torch.rand(2, 3, 20, 20) * 2 - 1
    pred = target.clone()
    pred[..., :3, :] = pred[..., -3:, :] = -1.0  # errors only within 3 pixels of the border
    pred[..., :, :3] = pred[..., :, -3:] = 1.0
    assert torch.isfinite(psnr(pred, target, (-1.0, 1.0), shave=2)).all()
    assert torch.isinf(psnr(pred, target, (-1.0, 1.0), shave=3)).all()
    assert torch.isinf(psnr(pred, target, (-1.0, 1.0), y_channel=True, shave=3)).all()
    # shaved SSIM equals the SSIM of the cropped images
    torch.testing.assert_close(
        ssim(pred, target, (-1.0, 1.0), shave=2),
        ssim(pred[..., 2:-2, 2:-2], target[..., 2:-2, 2:-2], (-1.0, 1.0)),
    )
    with pytest.raises(ValueError, match="shave=10"):
        psnr(pred, target, (-1.0, 1.0), shave=10)


def test_batched_values_equal_single_image_values():
    pred, target = uint8_pair(seed=3, shape=(4, 3, 24, 24))
    pred_t, target_t = torch.from_numpy(pred), torch.from_numpy(target)
    for metric in (psnr, ssim):
        batched = metric(pred_t, target_t, 255.0, y_channel=True, shave=2)
        singles = torch.cat(
            [
                metric(p[None], t[None], 255.0, y_channel=True, shave=2)
                for p, t in zip(pred_t, target_t, strict=True)
            ]
        )
        torch.testing.assert_close(batched, singles)


def test_sr_consistency_is_zero_for_a_consistent_output_and_closed_form_for_an_offset():
    hr = torch.rand(2, 3, 16, 16) * 1.6 - 0.8
    lr = downsample(hr, 4, "area")
    torch.testing.assert_close(sr_consistency(hr, lr, 4, method="area"), torch.zeros(2), atol=1e-12, rtol=0)
    # an offset of 0.2 in [-1, 1] is 0.1 on [0, 1]: MSE 0.01
    torch.testing.assert_close(sr_consistency(hr + 0.2, lr, 4, method="area"), torch.full((2,), 0.01))
    bicubic_lr = downsample(hr, 4, "bicubic")
    assert sr_consistency(hr, bicubic_lr, 4).max() < 1e-10
    assert sr_consistency(hr, bicubic_lr, 4, method=lambda x, s: downsample(x, s, "area")).min() > 1e-6
    with pytest.raises(ValueError, match="enlarged by scale=2"):
        sr_consistency(hr, lr, 2)


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="equal shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9), 1.0)
    with pytest.raises(ValueError, match="'bicubic', 'bilinear' or 'area'"):
        downsample(torch.zeros(1, 3, 8, 8), 2, "nearest")
