"""DPM-Solver++(2M) on Gaussian data x_0 ~ N(mu, diag(s^2)), where the optimal denoiser is exact.

With the exact (linear) denoiser every deterministic sampler is an affine map x_0 = a x_T + b per
dimension, so the output covariance is a^2 Var(x_T) in closed form: no Monte Carlo, and the errors
below are the solver's discretisation error alone (x_T is drawn from the exact marginal, so there is
no prior mismatch either). Thresholds sit between the measured value and what a first-order (or
broken) solver gives.
"""

import pytest
import torch

from lit_diffsr.diffusion import (
    GaussianDiffusion,
    GaussianOracle,
    get_beta_schedule,
    quadratic_respacing,
    sample_ddim,
    sample_dpm_solver_pp,
)

torch.set_num_threads(1)

LINEAR = GaussianDiffusion(get_beta_schedule("linear", 1000))
ALPHAS_CUMPROD = torch.from_numpy(LINEAR.alphas_cumprod)
MEAN = torch.linspace(-1.0, 1.0, 8, dtype=torch.float64)
STD = torch.linspace(0.75, 1.5, 8, dtype=torch.float64)
ORACLE = GaussianOracle(MEAN, STD)


def affine_map(sampler, process: GaussianDiffusion, prediction: str = "eps") -> tuple[torch.Tensor, ...]:
    """(a, b) of the sampler's map x_T -> x_0 per dimension, from its outputs at x_T = 0 and x_T = 1."""
    starts = torch.stack([torch.zeros(8), torch.ones(8)]).double()
    out = sampler(process, ORACLE.model_fn(ALPHAS_CUMPROD, prediction), starts, clip_denoised=False)
    return out[1] - out[0], out[0]


def covariance_error(sampler, process: GaussianDiffusion) -> float:
    """||Sigma_hat - Sigma||_F / ||Sigma||_F with Sigma_hat = a^2 V_T (diagonal), exact."""
    slope, _ = affine_map(sampler, process)
    covariance = slope**2 * ORACLE.marginal_variance(float(process.alphas_cumprod[-1]))
    return ((covariance - STD**2).norm() / (STD**2).norm()).item()


def test_twenty_steps_meet_the_two_percent_target_where_ddim_is_far_off() -> None:
    process = quadratic_respacing(LINEAR, 20)
    assert process.num_timesteps == 20  # 20 network calls
    # Measured: DPM-Solver++(2M) 0.97%, DDIM 15.7% on the same 20 steps.
    assert covariance_error(sample_dpm_solver_pp, process) < 0.02
    assert covariance_error(sample_ddim, process) > 0.10


def test_error_falls_as_the_square_of_the_step() -> None:
    # Second order: doubling the steps divides the error by ~4 (measured 4.4 for 50 -> 100 evenly
    # spaced steps, DDIM's first order gives 2.0); 3 separates the two.
    def ratio(sampler) -> float:
        errors = [covariance_error(sampler, LINEAR.respaced(steps)) for steps in ("50", "100")]
        return errors[0] / errors[1]

    assert ratio(sample_dpm_solver_pp) > 3
    assert ratio(sample_ddim) < 2.5


def test_converges_to_the_exact_probability_flow() -> None:
    slope, offset = affine_map(sample_dpm_solver_pp, LINEAR)
    # The exact flow from abar_{T-1} to abar = 1 is affine too: compare its (a, b) at all 1000 steps.
    flow = ORACLE.probability_flow(torch.stack([torch.zeros(8), torch.ones(8)]).double(),
                                   float(LINEAR.alphas_cumprod[-1]), 1.0)
    # Measured max deviation 2e-5 (DDIM: 2.4e-3 at 1000 steps); 1e-3 leaves margin, not room for first order.
    torch.testing.assert_close(slope, flow[1] - flow[0], rtol=0, atol=1e-3)
    torch.testing.assert_close(offset, flow[0], rtol=0, atol=1e-3)


@pytest.mark.parametrize("prediction", ["x0", "v"])
def test_every_parameterisation_gives_the_same_chain(prediction: str) -> None:
    eps_process = quadratic_respacing(GaussianDiffusion(LINEAR.betas), 10)
    other_process = quadratic_respacing(GaussianDiffusion(LINEAR.betas, prediction=prediction), 10)
    via_eps = affine_map(sample_dpm_solver_pp, eps_process, "eps")
    via_other = affine_map(sample_dpm_solver_pp, other_process, prediction)
    for eps_value, other_value in zip(via_eps, via_other, strict=True):
        torch.testing.assert_close(other_value, eps_value, rtol=1e-8, atol=1e-8)


def test_first_step_is_the_ddim_step_and_later_ones_differ() -> None:
    process = LINEAR.respaced("10")
    start = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model_fn = ORACLE.model_fn(ALPHAS_CUMPROD)
    _, solver = sample_dpm_solver_pp(process, model_fn, start, clip_denoised=False, return_trajectory=True)
    _, ddim = sample_ddim(process, model_fn, start, clip_denoised=False, return_trajectory=True)
    # No history before the first step: DPM-Solver++(1) = DDIM (Lu et al. 2022, §4.1).
    torch.testing.assert_close(solver[1], ddim[1], rtol=1e-10, atol=1e-10)
    # From the second step on the history enters; by the end the two differ (measured 1.6).
    assert (solver[-1] - ddim[-1]).abs().max() > 0.05


def test_quadratic_respacing_keeps_exactly_count_increasing_steps() -> None:
    for count in (2, 5, 100, 1000):
        steps = quadratic_respacing(LINEAR, count).timestep_map
        assert len(steps) == count and steps[0] == 0 and steps[-1] == 999
        assert bool((steps.diff() > 0).all())
    with pytest.raises(ValueError, match="count=1"):
        quadratic_respacing(LINEAR, 1)
