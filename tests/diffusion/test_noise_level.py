"""SR3 / WaveGrad continuous noise level: where it is drawn, its distribution, the loss, sampling lookup."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lit_diffsr.diffusion import (
    ContinuousNoiseLevel,
    GaussianDiffusion,
    get_beta_schedule,
    noise_levels_by_model_step,
)

SR3_BETAS = get_beta_schedule("linspace", 2000, start=1e-6, end=1e-2)
# Few, large steps: wide intervals, where uniform-in-sqrt(gamma) and uniform-in-gamma differ visibly.
WIDE_BETAS = np.array([0.3, 0.4, 0.5, 0.6])


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("variant", ["sqrt_gamma", "gamma"])
def test_levels_lie_in_the_interval_of_their_step(variant):
    levels = ContinuousNoiseLevel(SR3_BETAS, variant)
    sqrt_gamma, t = levels.sample(50_000, generator=seeded())
    low, high = levels.interval(t)
    assert ((sqrt_gamma.double() >= low - 1e-6) & (sqrt_gamma.double() <= high + 1e-6)).all()
    # Every step is drawn about equally often: counts of 25 per step, 5 sigma of a Poisson count.
    counts = torch.bincount(t, minlength=2000).double()
    assert counts.min() > 0 and abs(counts.mean() - 25) < 1e-9
    assert ((counts - 25).abs() < 5 * 5).all()
    # The interval of the first step starts at clean data, sqrt(gamma_{-1}) = 1.
    first_low, first_high = levels.interval(torch.tensor([0]))
    assert first_high.item() == 1.0 and first_low.item() == pytest.approx(math.sqrt(1 - 1e-6))


@pytest.mark.parametrize("variant", ["sqrt_gamma", "gamma"])
def test_level_distribution_within_an_interval_is_the_chosen_variant(variant):
    levels = ContinuousNoiseLevel(WIDE_BETAS, variant)
    sqrt_gamma, t = levels.sample(40_000, generator=seeded(1))
    low, high = levels.interval(t)
    s = sqrt_gamma.double()
    # Position inside the interval under each hypothesis: uniform in [0, 1] for the right one.
    in_sqrt = ((s - low) / (high - low)).numpy()
    in_gamma = ((s**2 - low**2) / (high**2 - low**2)).numpy()
    right, wrong = (in_sqrt, in_gamma) if variant == "sqrt_gamma" else (in_gamma, in_sqrt)
    # KS test against U[0, 1]: the chosen variant passes, the other is rejected (p ~ 1e-50 measured).
    assert stats.kstest(right, "uniform").pvalue > 1e-3
    assert stats.kstest(wrong, "uniform").pvalue < 1e-8


@pytest.mark.parametrize(("loss", "expected"), [("mse", 1.0), ("l1", math.sqrt(2 / math.pi))])
def test_loss_is_the_chosen_norm_of_the_eps_error(loss, expected):
    levels = ContinuousNoiseLevel(SR3_BETAS)
    x0 = torch.rand(64, 3, 8, 8) * 2 - 1
    seen = []

    def zero_model(x_noisy, sqrt_gamma):
        seen.append(sqrt_gamma)
        return torch.zeros_like(x_noisy)

    torch.manual_seed(0)
    terms = levels.training_losses(zero_model, x0, loss=loss)
    # Predicting 0: E eps^2 = 1 and E |eps| = sqrt(2 / pi); 12288 normals give a standard error < 0.01.
    assert terms["loss"].mean().item() == pytest.approx(expected, abs=0.03)
    assert terms["mse"].mean().item() == pytest.approx(1.0, abs=0.03)
    assert seen[0].shape == (64,) and ((seen[0] > 0) & (seen[0] <= 1)).all()


def test_loss_is_zero_for_the_true_noise_and_q_sample_mixes_as_sr3():
    levels = ContinuousNoiseLevel(SR3_BETAS)
    x0, noise = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    terms = levels.training_losses(lambda x, g: noise, x0, noise=noise)
    assert terms["loss"].abs().max().item() == 0.0
    sqrt_gamma = torch.tensor([1.0, 0.6, 0.0, 0.8])
    mixed = ContinuousNoiseLevel.q_sample(x0, sqrt_gamma, noise)
    torch.testing.assert_close(mixed[0], x0[0])
    torch.testing.assert_close(mixed[1], 0.6 * x0[1] + 0.8 * noise[1])
    torch.testing.assert_close(mixed[2], noise[2])


def test_sampling_lookup_gives_the_level_of_each_respaced_step():
    process = GaussianDiffusion(SR3_BETAS, variance="fixed_large")
    respaced = process.respaced("100")
    table = noise_levels_by_model_step(respaced)
    model_steps = respaced.timestep_map
    torch.testing.assert_close(table[model_steps], torch.from_numpy(np.sqrt(respaced.alphas_cumprod)))
    torch.testing.assert_close(
        table[model_steps], torch.from_numpy(np.sqrt(process.alphas_cumprod))[model_steps]
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="variant"):
        ContinuousNoiseLevel(SR3_BETAS, "sigma")
    with pytest.raises(ValueError, match="loss"):
        ContinuousNoiseLevel(SR3_BETAS).training_losses(lambda x, g: x, torch.zeros(1, 1, 2, 2), loss="huber")
