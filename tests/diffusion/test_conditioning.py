"""CDM conditioning augmentation: blur frequency, sigma range and kernel; noise levels and q(z_s | z_0)."""

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import NoiseAugmentation, blur_augmentation, gaussian_kernels, get_beta_schedule

COSINE = get_beta_schedule("cosine", 1000)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_blur_is_applied_to_the_configured_fraction_with_sigma_in_range():
    images = torch.rand(4000, 1, 4, 4)
    _, applied, sigmas = blur_augmentation(images, 0.5, (0.4, 0.6), 3, generator=seeded())
    # Binomial(4000, 0.5): standard deviation of the fraction 0.0079; 5 sigma.
    assert abs(applied.float().mean().item() - 0.5) < 0.04
    assert sigmas.min() >= 0.4 and sigmas.max() <= 0.6
    # Uniform on [0.4, 0.6]: mean 0.5 (s.e. 0.0009) and both ends reached.
    assert abs(sigmas.mean().item() - 0.5) < 0.005
    assert sigmas.min() < 0.41 and sigmas.max() > 0.59
    _, never, _ = blur_augmentation(images, 0.0, generator=seeded())
    _, always, _ = blur_augmentation(images, 1.0, generator=seeded())
    assert not never.any() and always.all()


def test_blur_equals_an_explicit_reflect_padded_gaussian_convolution():
    images = torch.rand(6, 3, 5, 7, dtype=torch.float64)
    blurred, applied, sigmas = blur_augmentation(images, 0.5, (0.4, 0.6), 3, generator=seeded(2))
    assert applied.any() and not applied.all()
    for i in range(len(images)):
        if not applied[i]:
            assert torch.equal(blurred[i], images[i])
            continue
        taps = np.exp(-(np.arange(-1, 2) ** 2) / (2 * sigmas[i].item() ** 2))
        kernel = np.outer(taps, taps) / np.outer(taps, taps).sum()
        padded = np.pad(images[i].numpy(), ((0, 0), (1, 1), (1, 1)), mode="reflect")
        expected = sum(
            kernel[dy, dx] * padded[:, dy : dy + 5, dx : dx + 7] for dy in range(3) for dx in range(3)
        )
        np.testing.assert_allclose(blurred[i].numpy(), expected, rtol=1e-10, atol=1e-12)
    constant = torch.full((2, 3, 4, 4), 0.3)
    torch.testing.assert_close(blur_augmentation(constant, 1.0)[0], constant)


def test_gaussian_kernels_are_normalised_and_reject_even_sizes():
    taps = gaussian_kernels(torch.tensor([0.4, 0.6]), 3)
    torch.testing.assert_close(taps.sum(1), torch.ones(2, dtype=torch.float64))
    assert taps[0, 1] > taps[1, 1]  # smaller sigma, sharper kernel
    with pytest.raises(ValueError, match="kernel_size"):
        gaussian_kernels(torch.tensor([0.5]), 4)


def test_training_levels_are_uniform_over_zero_to_max_level():
    augmentation = NoiseAugmentation(COSINE, max_level=9)
    levels = augmentation.sample_levels(20_000, generator=seeded())
    assert levels.min() == 0 and levels.max() == 9
    counts = torch.bincount(levels, minlength=10).double()
    # 2000 expected per level, Poisson s.d. 45: 5 sigma.
    assert ((counts - 2000).abs() < 225).all()


@pytest.mark.parametrize("level", [1, 250, 700, 1000])
def test_noised_condition_has_the_mean_and_variance_of_q(level):
    augmentation = NoiseAugmentation(COSINE)
    z0 = torch.tensor([0.8, -0.5, 0.1, 0.0], dtype=torch.float64)
    count = 40_000
    torch.manual_seed(level)
    z_s = augmentation.apply(z0.expand(count, 4), torch.full((count,), level))
    abar = np.cumprod(1 - COSINE)[level - 1]  # level s is step s - 1
    # q(z_s | z_0) = N(sqrt(abar) z_0, (1 - abar) I): 5 standard errors of the sample mean and variance.
    variance = 1 - abar
    mean_tolerance = 5 * np.sqrt(variance / count) + 1e-12
    np.testing.assert_allclose(z_s.mean(0).numpy(), np.sqrt(abar) * z0.numpy(), atol=mean_tolerance)
    np.testing.assert_allclose(z_s.var(0).numpy(), variance, rtol=5 * np.sqrt(2 / count))


def test_level_zero_is_no_augmentation_and_levels_are_checked():
    augmentation = NoiseAugmentation(COSINE)
    z0 = torch.randn(3, 3, 4, 4)
    assert torch.equal(augmentation.apply(z0, torch.zeros(3, dtype=torch.long)), z0)
    mixed = augmentation.apply(z0, torch.tensor([0, 500, 0]))
    assert torch.equal(mixed[0], z0[0]) and not torch.equal(mixed[1], z0[1])
    with pytest.raises(ValueError, match="level 1001"):
        augmentation.check_level(1001)
    with pytest.raises(ValueError, match="max_level"):
        NoiseAugmentation(COSINE, max_level=2000)
