"""DDRM sampler: exact data consistency, end-to-end runs with the exact denoiser of a Gaussian prior, and
the Monte-Carlo mean on denoising against DDRM's closed-form mean and the Gaussian posterior mean."""

from collections.abc import Callable

import pytest
import torch

from lit_diffsr.diffusion.ddrm import ddrm_sample, ddrm_timesteps
from lit_diffsr.diffusion.ddrm_operators import (
    AnisotropicDeblurring,
    Colorization,
    Deblurring,
    Denoising,
    GeneralH,
    Inpainting,
    SRConv,
    SuperResolution,
    SVDOperator,
    gaussian_kernel,
    uniform_kernel,
)

T = 1000
# Ho et al. 2020's linear betas 1e-4..0.02, written here so the test does not depend on schedules.py.
ALPHAS_CUMPROD = torch.cumprod(1 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), dim=0)
CHANNELS, SIZE = 3, 8

OPERATORS: dict[str, Callable[[], SVDOperator]] = {
    "denoising": lambda: Denoising(CHANNELS, SIZE),
    "inpainting": lambda: Inpainting(CHANNELS, SIZE, mask=(torch.arange(SIZE * SIZE) % 3 > 0).view(SIZE, -1)),
    "superresolution": lambda: SuperResolution(CHANNELS, SIZE, 2),
    "colorization": lambda: Colorization(SIZE),
    "srconv": lambda: SRConv(None, CHANNELS, SIZE, 2),
    "deblurring": lambda: Deblurring(gaussian_kernel(1.0, 5), CHANNELS, SIZE),  # s_min ~ 1e-3
    # rank-deficient: the 3-tap box on 8 samples has a null direction, so some s_i = 0
    "anisotropic_deblurring": lambda: AnisotropicDeblurring(uniform_kernel(3), gaussian_kernel(2.0, 5),
                                                            CHANNELS, SIZE),
    "general": lambda: GeneralH(0.1 * torch.randn(20, CHANNELS * SIZE * SIZE,
                                                  generator=torch.Generator().manual_seed(0)),
                                (CHANNELS, SIZE, SIZE)),
}


def gaussian_eps(mean: float, std: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exact ε-prediction for x0 ~ N(mean, std²) per pixel: with x_t = √ᾱ x0 + √(1-ᾱ) ε,
    E[ε | x_t] = √(1-ᾱ) (x_t - √ᾱ mean) / (ᾱ std² + 1 - ᾱ) (Gaussian conditioning)."""

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = ALPHAS_CUMPROD[t].to(x_t).view(-1, 1, 1, 1)
        return (1 - abar).sqrt() * (x_t - abar.sqrt() * mean) / (abar * std**2 + 1 - abar)

    return eps_fn


def test_timesteps_skip_uniformly_from_the_noisiest() -> None:
    assert ddrm_timesteps(1000, 20).tolist() == list(range(950, -1, -50))
    assert ddrm_timesteps(10, 10).tolist() == list(range(9, -1, -1))
    with pytest.raises(ValueError, match="num_steps must be in"):
        ddrm_timesteps(10, 11)


@pytest.mark.parametrize("name", OPERATORS)
def test_noiseless_observed_components_equal_y_exactly(name: str) -> None:
    # σ_y = 0, η_b = 1: every observed component ends at ȳ_i = (U^T y)_i / s_i (eq. 8, noise std 0),
    # whatever the model says; the model here is a crude nonlinear one, and clipping is on.
    operator = OPERATORS[name]()
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, *operator.input_shape, generator=generator) * 2 - 1
    y = operator.H(x)
    sample = ddrm_sample(operator, y, 0.0, lambda x_t, t: torch.tanh(x_t), ALPHAS_CUMPROD,
                         ddrm_timesteps(T, 10), generator=generator)
    observed = operator.singulars() > 0
    spectral_sample = operator.Vt(sample)[:, : operator.measurement_dim]
    singulars = operator.singulars().float()
    # float32 rounding through V and V^T on O(1) values (ȳ up to ~1e3 for s_min ~ 1e-3, times s back).
    torch.testing.assert_close((singulars * spectral_sample)[:, observed], operator.Ut(y)[:, observed],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", OPERATORS)
def test_runs_end_to_end_with_the_gaussian_oracle_and_tracks_y(name: str) -> None:
    operator = OPERATORS[name]()
    mean, std, sigma_y = 0.1, 1.0, 0.1
    generator = torch.Generator().manual_seed(1)
    x = mean + std * torch.randn(8, *operator.input_shape, generator=generator)
    y = operator.H(x) + sigma_y * torch.randn(8, operator.measurement_dim, generator=generator)
    sample, states = ddrm_sample(operator, y, sigma_y, gaussian_eps(mean, std), ALPHAS_CUMPROD,
                                 ddrm_timesteps(T, 50), generator=generator, clip=False,
                                 return_trajectory=True)
    assert sample.shape == x.shape and bool(sample.isfinite().all())
    assert len(states) == 51 and states[-1] is sample

    def residual(image: torch.Tensor) -> float:
        return (operator.H(image) - y).pow(2).mean().sqrt().item()

    # The truth's residual is σ_y; a posterior sample's is comparable (measured 0.6-0.9 σ_y here). The
    # margin covers DDRM's coarse grid: the last jump (σ ≈ 0.08 -> 0.01) keeps a little of σ ≈ 0.08 noise in
    # components with σ_y / s_i < 0.08. A sample that ignored y would sit at the prior's residual, > 3 σ_y.
    prior_sample = mean + std * torch.randn(x.shape, generator=generator)
    assert residual(prior_sample) > 3 * sigma_y
    assert residual(sample) < 1.5 * sigma_y


def ddrm_denoising_mean(y: torch.Tensor, mean: float, std: float, sigma_y: float, steps: list[int],
                        eta: float) -> torch.Tensor:
    """E[DDRM output] for H = I, x0 ~ N(mean, std²), η_b = 1, no clipping, in closed form.

    Every update of eq. 7-8 is affine in the state plus zero-mean noise, and the exact denoiser is
    E[x0 | x0 + σ ε] = a x + (1 - a) mean with a = std² / (std² + σ²), so the mean m follows a scalar
    recursion (VE levels σ_t = √((1 - ᾱ_t) / ᾱ_t), σ = 0 after the last step)."""
    sigmas = [((1 - ALPHAS_CUMPROD[t]) / ALPHAS_CUMPROD[t]).sqrt().item() for t in steps] + [0.0]
    m = y if sigma_y < sigmas[0] else torch.zeros_like(y)
    for sigma_t, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        a = std**2 / (std**2 + sigma_t**2)
        m0 = a * m + (1 - a) * mean
        m = y if sigma_next >= sigma_y else m0 + (1 - eta**2) ** 0.5 * sigma_next * (y - m0) / sigma_y
    return m


def test_denoising_mean_approaches_the_gaussian_posterior_mean() -> None:
    mean, std, sigma_y, eta, samples = 0.1, 0.5, 0.2, 0.85, 4000
    operator = Denoising(1, 4)
    generator = torch.Generator().manual_seed(2)
    x = mean + std * torch.randn(1, 1, 4, 4, generator=generator)
    y = operator.H(x) + sigma_y * torch.randn(1, 16, generator=generator)
    steps = ddrm_timesteps(T, 100).tolist()
    restored = ddrm_sample(operator, y.expand(samples, -1), sigma_y, gaussian_eps(mean, std), ALPHAS_CUMPROD,
                           steps, eta=eta, generator=generator, clip=False).reshape(samples, 16).double()
    monte_carlo = restored.mean(dim=0)
    # 4 standard errors of the Monte-Carlo mean (sample std / √N): a 6e-5 two-sided chance per pixel.
    standard_error = restored.std(dim=0) / samples**0.5
    y64 = y[0].double()

    # 1) The sampler's mean equals DDRM's own closed-form mean: checks every coefficient of eq. 7-8.
    ddrm_mean = ddrm_denoising_mean(y64, mean, std, sigma_y, steps, eta)
    assert bool(((monte_carlo - ddrm_mean).abs() <= 4 * standard_error).all())

    # 2) That mean is close to the posterior mean E[x0 | y] = (std² y + σ_y² mean) / (std² + σ_y²).
    # DDRM is not an exact posterior sampler: its mean is k y + (1 - k) mean with k set by η and the step
    # grid. With η = 0.85 and this 100-step grid k = 0.860 against the posterior's 0.862 (over 50-200 steps
    # and σ_y in [0.1, 0.3] it stays within 0.05), so allow 1% of |y - mean| plus the Monte-Carlo error.
    # The two trivial answers are far outside: y itself (k = 1) and the prior mean (k = 0).
    posterior_mean = (std**2 * y64 + sigma_y**2 * mean) / (std**2 + sigma_y**2)
    bias_allowance = 0.01 * (y64 - mean).abs()
    assert bool(((monte_carlo - posterior_mean).abs() <= bias_allowance + 4 * standard_error).all())
    assert bool(((ddrm_mean - posterior_mean).abs() <= bias_allowance).all())


def test_timestep_order_does_not_matter_and_generator_reproduces() -> None:
    operator = SuperResolution(CHANNELS, SIZE, 2)
    y = operator.H(torch.rand(2, CHANNELS, SIZE, SIZE, generator=torch.Generator().manual_seed(3)))
    steps = ddrm_timesteps(T, 5)

    def run(order: torch.Tensor) -> torch.Tensor:
        return ddrm_sample(operator, y, 0.05, gaussian_eps(0.0, 0.5), ALPHAS_CUMPROD, order,
                           generator=torch.Generator().manual_seed(4))

    torch.testing.assert_close(run(steps), run(steps.flip(0)), atol=0, rtol=0)
    assert not torch.equal(run(steps), ddrm_sample(operator, y, 0.05, gaussian_eps(0.0, 0.5), ALPHAS_CUMPROD,
                                                   steps, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"y": torch.zeros(2, 7)}, r"expects shape \(B, 48\)"),
        ({"timesteps": [5, 5]}, "timesteps must be distinct steps"),
        ({"timesteps": [1000]}, r"in \[0, 1000\)"),
        ({"alphas_cumprod": ALPHAS_CUMPROD[None]}, "alphas_cumprod must be the 1-D table"),
        ({"sigma_y": -0.1}, "sigma_y >= 0"),
        ({"eta_b": 1.5}, "eta, eta_b in"),
        ({"eps_fn": lambda x_t, t: torch.cat([x_t, x_t], dim=1)}, "keep only the ε channels"),
    ],
)
def test_bad_input_names_the_problem(kwargs: dict, message: str) -> None:
    operator = SuperResolution(CHANNELS, SIZE, 2)
    arguments = {"operator": operator, "y": torch.zeros(2, 48), "sigma_y": 0.0,
                 "eps_fn": lambda x_t, t: torch.zeros_like(x_t), "alphas_cumprod": ALPHAS_CUMPROD,
                 "timesteps": ddrm_timesteps(T, 5)} | kwargs
    with pytest.raises(ValueError, match=message):
        ddrm_sample(**arguments)
