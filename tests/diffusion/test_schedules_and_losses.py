"""Schedules beyond the reference values, and properties of the likelihood terms."""

import math

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import (
    discretized_gaussian_log_likelihood,
    get_beta_schedule,
    mean_flat,
    normal_kl,
    timestep_embedding,
)


def test_cosine_schedule_follows_its_alpha_bar_until_the_clip() -> None:
    betas = get_beta_schedule("cosine", 100)
    alphas_cumprod = np.cumprod(1 - betas)
    # alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2) (Nichol & Dhariwal 2021, eq. 17).
    f = np.cos((np.arange(1, 101) / 100 + 0.008) / 1.008 * math.pi / 2) ** 2
    f0 = math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(alphas_cumprod[:-1], (f / f0)[:-1], rtol=1e-10)
    assert betas[-1] == 0.999  # f(T) = 0 would make beta_T = 1; the clip keeps it below.


def test_sqrt_linear_and_linspace_schedules() -> None:
    sqrt_linear = get_beta_schedule("sqrt_linear", 5, start=0.0004, end=0.0016)
    np.testing.assert_allclose(np.sqrt(sqrt_linear), np.linspace(0.02, 0.04, 5), rtol=1e-12)
    linspace = get_beta_schedule("linspace", 3, start=1e-6, end=1e-2)
    np.testing.assert_allclose(linspace, [1e-6, (1e-6 + 1e-2) / 2, 1e-2], rtol=1e-12)
    assert sqrt_linear.dtype == linspace.dtype == np.float64


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [("quadratic", {}, "unknown beta schedule"), ("linear", {"start": 0.1}, "unknown keyword"),
     ("linspace", {"start": 0.1, "end": 2.0}, "outside"), ("cosine", {"beta_end": 1}, "unknown keyword")],
)
def test_bad_schedule_arguments_are_named(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        get_beta_schedule(name, 10, **kwargs)


def test_num_timesteps_must_be_positive() -> None:
    with pytest.raises(ValueError, match="num_timesteps"):
        get_beta_schedule("linear", 0)


def test_normal_kl_is_zero_for_equal_and_matches_closed_form() -> None:
    mean, log_variance = torch.tensor([0.3]), torch.tensor([-0.7])
    assert normal_kl(mean, log_variance, mean, log_variance).item() == pytest.approx(0.0, abs=1e-7)
    # KL(N(1, 1) || N(0, 4)) = log 2 + (1 + 1) / 8 - 1/2.
    kl = normal_kl(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(0.0), torch.tensor(math.log(4.0)))
    assert kl.item() == pytest.approx(math.log(2.0) + 0.25 - 0.5, rel=1e-6)


def test_discretized_likelihood_sums_to_one_over_all_bins() -> None:
    bins = torch.linspace(-1, 1, 256, dtype=torch.float64)  # the 256 8-bit values in [-1, 1]
    means, log_scales = torch.full_like(bins, 0.1), torch.full_like(bins, math.log(0.3))
    total = discretized_gaussian_log_likelihood(bins, means, log_scales).exp().sum()
    # Bin edges are shared by neighbours, so the probabilities telescope to exactly 1 (any CDF).
    assert total.item() == pytest.approx(1.0, abs=1e-6)


def test_discretized_likelihood_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="share one shape"):
        discretized_gaussian_log_likelihood(torch.zeros(3), torch.zeros(3), torch.zeros(2))


def test_mean_flat_keeps_the_batch() -> None:
    x = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(mean_flat(x), torch.tensor([5.5, 17.5]))


def test_timestep_embedding_float_steps_and_odd_width() -> None:
    continuous = timestep_embedding(torch.tensor([0.5, 0.25]), dim=7)
    assert continuous.shape == (2, 7) and bool((continuous[:, -1] == 0).all())
    # First frequency is 1: [cos(t) ... | sin(t) ...].
    torch.testing.assert_close(continuous[:, 0], torch.cos(torch.tensor([0.5, 0.25])))
    torch.testing.assert_close(continuous[:, 3], torch.sin(torch.tensor([0.5, 0.25])))
    with pytest.raises(ValueError, match="1-D"):
        timestep_embedding(torch.zeros(2, 1), dim=8)
