"""Closed-form checks on Gaussian data x_0 ~ N(mu, diag(s^2)), where the optimal denoiser is exact.

The predictors are linear in x_t, so every sampler output here is exactly Gaussian: sample means have
standard error s / sqrt(N) and sample variances sqrt(2 / (N - 1)) relative. Tolerances are 4 standard
errors (a false alarm for a changed seed has probability ~6e-5 per check) plus the sampler's own
discretisation bias where it has one.
"""

import math

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import (
    GaussianDiffusion,
    GaussianOracle,
    get_beta_schedule,
    sample_ancestral,
    sample_ddim,
)

torch.set_num_threads(1)

LINEAR = GaussianDiffusion(get_beta_schedule("linear", 1000))
ALPHAS_CUMPROD = torch.from_numpy(LINEAR.alphas_cumprod)
# Eight dimensions with s^2 from 0.56 to 2.25 (>= 0.5, where the fixed-small bias is about 1%).
MEAN, STD = torch.linspace(-1.0, 1.0, 8), torch.linspace(0.75, 1.5, 8)
ORACLE = GaussianOracle(MEAN, STD)


def test_eps_and_x0_predictors_agree_with_the_parameterisation() -> None:
    x_t = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([0, 10, 200, 700, 999])
    abar = ALPHAS_CUMPROD[t].view(-1, 1)
    x0_via_eps = LINEAR.predict_x0_from_eps(x_t, t, ORACLE.eps(x_t, abar))
    torch.testing.assert_close(x0_via_eps, ORACLE.x0(x_t, abar))


@pytest.mark.parametrize("step", [0, 10, 100, 500, 999])
def test_exact_predictor_reaches_the_analytic_eps_loss_floor(step: int) -> None:
    num_samples = 20000
    generator = torch.Generator().manual_seed(step)
    x0 = ORACLE.sample(num_samples, generator)
    t = torch.full((num_samples,), step)
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    losses = LINEAR.training_losses(ORACLE.model_fn(ALPHAS_CUMPROD), x0, t, noise)["mse"]
    floor = ORACLE.eps_mse_floor(ALPHAS_CUMPROD[step]).mean()  # E[Var(eps | x_t)], averaged over dims
    standard_error = losses.std() / math.sqrt(num_samples)
    assert abs(losses.mean() - floor) < 4 * standard_error, (losses.mean().item(), floor.item())


def fixed_small_variance_bias(diffusion: GaussianDiffusion, std: float) -> float:
    """Relative variance error of ancestral sampling with sigma_t^2 = tilde-beta_t and the exact x_0|x_t.

    The exact reverse step has variance tilde-beta_t + coef1_t^2 Var(x_0 | x_t); fixed-small drops the
    second term. Propagate the (linear) chain's variance from x_{T-1} ~ N(0, 1) in closed form.
    """
    variance = 1.0
    for t in reversed(range(diffusion.num_timesteps)):
        abar = diffusion.alphas_cumprod[t]
        gain = math.sqrt(abar) * std**2 / (abar * std**2 + 1 - abar)  # d E[x_0 | x_t] / d x_t
        slope = diffusion.posterior_mean_coef1[t] * gain + diffusion.posterior_mean_coef2[t]
        variance = slope**2 * variance + (diffusion.posterior_variance[t] if t > 0 else 0.0)
    return variance / std**2 - 1


def test_ancestral_sampling_reproduces_mean_and_variance() -> None:
    num_samples = 4000
    samples = sample_ancestral(LINEAR, ORACLE.model_fn(ALPHAS_CUMPROD), (num_samples, 8),
                               generator=torch.Generator().manual_seed(0), clip_denoised=False)
    mean_error = (samples.mean(0) - MEAN) / (STD / math.sqrt(num_samples))
    assert mean_error.abs().max() < 4, mean_error
    relative_variance_error = samples.var(0) / STD**2 - 1
    biases = torch.tensor([fixed_small_variance_bias(LINEAR, s) for s in STD.tolist()])
    assert biases.abs().max() < 0.012  # "about 1%" for s^2 >= 0.5: the cost of Sigma = tilde-beta_t
    assert (relative_variance_error - biases).abs().max() < 4 * math.sqrt(2 / (num_samples - 1))
    # Pooled over the 8 dimensions the standard error is sqrt(2 / 32000) = 0.8%.
    pooled = (relative_variance_error - biases).mean()
    assert abs(pooled) < 4 * math.sqrt(2 / (8 * (num_samples - 1))), pooled


def test_ddim_converges_to_the_probability_flow_with_more_steps() -> None:
    start = torch.randn(4000, 8, generator=torch.Generator().manual_seed(1))
    # The exact deterministic map from x_{T-1} to x_0 (DDIM's continuous limit); it shares the sample's
    # Monte Carlo noise, so DDIM's error against it is pure discretisation error.
    exact = ORACLE.probability_flow(start, float(LINEAR.alphas_cumprod[-1]), 1.0)
    errors, variance_errors = {}, {}
    for steps in (50, 1000):
        process = LINEAR if steps == 1000 else LINEAR.respaced(f"ddim{steps}")
        samples = sample_ddim(process, ORACLE.model_fn(ALPHAS_CUMPROD), start, eta=0.0, clip_denoised=False)
        errors[steps] = (samples - exact).pow(2).mean().sqrt().item()
        variance_errors[steps] = (samples.var(0) / exact.var(0) - 1).abs().max().item()
    # DDIM is first order in the step size: 20x the steps gives ~19x less error (0.037 -> 0.0019 RMS),
    # and the sample variance is ~7% low at 50 steps, ~0.4% at 1000.
    assert errors[1000] < errors[50] / 10, errors
    assert errors[50] < 0.06 and errors[1000] < 0.004, errors
    assert variance_errors[50] < 0.12 and variance_errors[1000] < 0.01, variance_errors
    # Against the data: Monte Carlo error of the 4000 starts, 1% discretisation, and the prior mismatch
    # (x_{T-1} ~ N(0, 1) instead of N(sqrt(abar_T) mu, V_T)) that shifts the mean by ~0.0064 s mu.
    mean_error = (samples.mean(0) - MEAN) / (STD / math.sqrt(4000))
    assert mean_error.abs().max() < 4 + 0.0064 * math.sqrt(4000), mean_error
    assert (samples.var(0) / STD**2 - 1).abs().max() < 4 * math.sqrt(2 / 3999) + 0.01


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_every_parameterisation_samples_the_same_chain(prediction: str) -> None:
    eps_process = GaussianDiffusion(LINEAR.betas).respaced("ddim20")
    other_process = GaussianDiffusion(LINEAR.betas, prediction=prediction).respaced("ddim20")
    start = torch.randn(64, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    via_eps = sample_ddim(eps_process, ORACLE.model_fn(ALPHAS_CUMPROD, "eps"), start, clip_denoised=False)
    via_other = sample_ddim(other_process, ORACLE.model_fn(ALPHAS_CUMPROD, prediction), start,
                            clip_denoised=False)
    np.testing.assert_allclose(via_other.numpy(), via_eps.numpy(), rtol=1e-8, atol=1e-8)
