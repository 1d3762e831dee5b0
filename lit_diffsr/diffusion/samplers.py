"""Reverse-process samplers: small functions over a ``model_fn(x_t, model_t) -> raw output`` callable.

Steps index the process passed in (a respaced one for fewer steps: ``diffusion.respaced("ddim50")``);
the network gets ``diffusion.timestep_map[t]``. The state "at step s" is x_s ~ q(x_s | x_0), noised with
abar_s (s = 0 is one step of noise); the chain ends with the clean x_0 prediction after step 0.

Truncation (Ho et al. 2022, CDM §4.2): ``stop_step=s`` returns x_s instead of the clean sample, and
``start_step=s`` resumes the chain from a given x_s. Running to ``stop_step=s`` then from
``start_step=s`` with the same generator gives exactly the full chain.
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lit_diffsr.diffusion.gaussian_diffusion import GaussianDiffusion, ModelFn
from lit_diffsr.diffusion.on_device import randn_on
from lit_diffsr.diffusion.progress import report_step

StepFn = Callable[[dict[str, torch.Tensor], torch.Tensor, int], torch.Tensor]


def _reverse_chain(diffusion: GaussianDiffusion, model_fn: ModelFn,
                   shape_or_noise: Sequence[int] | torch.Tensor, step_fn: StepFn,
                   generator: torch.Generator | None, clip_denoised: bool, progress: bool,
                   return_trajectory: bool, start_step: int | None, stop_step: int | None,
                   device: torch.device | str) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Run x <- step_fn(p_mean_variance(x, t), x, t) for t = start_step, ..., stop_step + 1."""
    last = diffusion.num_timesteps - 1
    start = last if start_step is None else start_step
    stop = -1 if stop_step is None else stop_step
    if not 0 <= start <= last:
        raise ValueError(f"start_step={start_step} must lie in [0, {last}] (steps of this process)")
    if not -1 <= stop < start:
        raise ValueError(f"stop_step={stop_step} must lie in [0, start_step={start}) (None runs to x_0)")
    if isinstance(shape_or_noise, torch.Tensor):
        x = shape_or_noise
    elif start != last:
        raise ValueError(f"start_step={start_step} resumes from a given x_s: pass that tensor as "
                         "shape_or_noise, not a shape")
    else:
        x = randn_on(shape_or_noise, device, generator)

    steps = range(start, stop, -1)
    if progress:
        from tqdm.auto import tqdm  # tqdm ships with Lightning; imported only when asked for.

        steps = tqdm(steps, desc="sampling")
    trajectory = [x]
    for done, step in enumerate(steps, start=1):
        t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
        out = diffusion.p_mean_variance(model_fn(x, diffusion.model_timesteps(t)), x, t, clip_denoised)
        x = step_fn(out, x, step)
        report_step(done, start - stop)
        if return_trajectory:
            trajectory.append(x)
    return (x, trajectory) if return_trajectory else x


@torch.no_grad()
def sample_ancestral(diffusion: GaussianDiffusion, model_fn: ModelFn,
                     shape_or_noise: Sequence[int] | torch.Tensor, generator: torch.Generator | None = None,
                     clip_denoised: bool = True, progress: bool = False, return_trajectory: bool = False,
                     start_step: int | None = None, stop_step: int | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor | tuple[torch.Tensor, list]:
    """DDPM ancestral sampling x_{t-1} = mu_theta(x_t, t) + sigma_t z (Ho et al. 2020, Alg. 2).

    sigma_t^2 is the process's variance (fixed small/large or learned); no noise is added at t = 0.

    Args:
        diffusion: the (possibly respaced) process.
        model_fn: model_fn(x_t, model_t) -> raw network output.
        shape_or_noise: a shape to draw x_{T-1} ~ N(0, I) (float32 on ``device``), or the start tensor.
        generator: torch.Generator for reproducible noise.
        clip_denoised: clamp the predicted x_0 to [-1, 1] at every step.
        progress: show a tqdm bar.
        return_trajectory: also return [x_start, x after each step].
        start_step, stop_step: truncation, see the module docstring.
        device: where a drawn start goes when a shape is given.

    Returns:
        The final x, or (x, trajectory).
    """
    def ancestral_step(out: dict[str, torch.Tensor], x: torch.Tensor, step: int) -> torch.Tensor:
        if step == 0:
            return out["mean"]
        noise = randn_on(x.shape, x.device, generator, x.dtype)
        return out["mean"] + torch.exp(0.5 * out["log_variance"]) * noise

    return _reverse_chain(diffusion, model_fn, shape_or_noise, ancestral_step, generator, clip_denoised,
                          progress, return_trajectory, start_step, stop_step, device)


@torch.no_grad()
def sample_ddim(diffusion: GaussianDiffusion, model_fn: ModelFn, shape_or_noise: Sequence[int] | torch.Tensor,
                eta: float = 0.0, generator: torch.Generator | None = None, clip_denoised: bool = True,
                progress: bool = False, return_trajectory: bool = False, start_step: int | None = None,
                stop_step: int | None = None,
                device: torch.device | str = "cpu") -> torch.Tensor | tuple[torch.Tensor, list]:
    """DDIM sampling (Song, Meng & Ermon 2021, eq. 12); eta = 0 is deterministic, eta = 1 is DDPM-like.

    x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat + sigma_t z with
    sigma_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}) (eq. 16). Use a
    respaced process for fewer steps. Arguments as ``sample_ancestral``.
    """
    if eta < 0:
        raise ValueError(f"sample_ddim: eta must be >= 0, got {eta}")

    def ddim_step(out: dict[str, torch.Tensor], x: torch.Tensor, step: int) -> torch.Tensor:
        alpha_bar = float(diffusion.alphas_cumprod[step])
        alpha_bar_prev = float(diffusion.alphas_cumprod_prev[step])
        # Song et al. 2021, eq. 16.
        sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)) ** 0.5
        # Song et al. 2021, eq. 12 (the clamp guards rounding when sigma^2 = 1 - abar_{t-1}, eta = 1).
        x_prev = alpha_bar_prev**0.5 * out["pred_x0"] + max(1 - alpha_bar_prev - sigma**2, 0.0) ** 0.5 * out[
            "pred_eps"]
        if sigma > 0:
            x_prev = x_prev + sigma * randn_on(x.shape, x.device, generator, x.dtype)
        return x_prev

    return _reverse_chain(diffusion, model_fn, shape_or_noise, ddim_step, generator, clip_denoised,
                          progress, return_trajectory, start_step, stop_step, device)


@torch.no_grad()
def sample_dpm_solver_pp(diffusion: GaussianDiffusion, model_fn: ModelFn,
                         shape_or_noise: Sequence[int] | torch.Tensor, clip_denoised: bool = True,
                         progress: bool = False, return_trajectory: bool = False,
                         start_step: int | None = None, stop_step: int | None = None,
                         device: torch.device | str = "cpu", generator: torch.Generator | None = None
                         ) -> torch.Tensor | tuple[torch.Tensor, list]:
    """DPM-Solver++(2M): the multistep second-order data-prediction solver (Lu et al. 2022, Alg. 2).

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and h_i = lambda_{t_i} -
    lambda_{t_{i-1}}, each step from t_{i-1} to t_i is
        x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i,
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i,
    with D_i = x0_{i-1} (first order, i.e. DDIM) for the first step and for the last one, which lands on
    abar = 1 (sigma = 0, h infinite) and so returns the clean prediction. One network call per step of
    the (respaced) process, as DDIM: ``diffusion.respaced("20")`` is 20 NFE. Works with every
    prediction type (eps, x0, v), since the solver only needs x0_hat. Deterministic: ``generator`` is
    used only to draw the start when a shape is given.

    Resuming with ``start_step`` restarts the multistep history, so its first step is first order and a
    split chain differs slightly from the full one (unlike ``sample_ancestral`` / ``sample_ddim``).
    Other arguments as ``sample_ancestral``.
    """
    previous: dict[str, torch.Tensor | float] = {}

    def solver_step(out: dict[str, torch.Tensor], x: torch.Tensor, step: int) -> torch.Tensor:
        alpha_bar = float(diffusion.alphas_cumprod[step])
        alpha_bar_next = float(diffusion.alphas_cumprod_prev[step])
        pred_x0 = out["pred_x0"]
        if alpha_bar_next >= 1.0:  # the last step lands on sigma = 0: the clean prediction itself
            return pred_x0
        # lambda = log(alpha / sigma) = 0.5 log(abar / (1 - abar)) (Lu et al. 2022, §3).
        lambda_now = 0.5 * math.log(alpha_bar / (1.0 - alpha_bar))
        lambda_next = 0.5 * math.log(alpha_bar_next / (1.0 - alpha_bar_next))
        h = lambda_next - lambda_now
        if "pred_x0" in previous:
            half_inverse_ratio = 0.5 * h / float(previous["h"])  # 1 / (2 r_i), Lu et al. 2022, Alg. 2
            denoised = (1.0 + half_inverse_ratio) * pred_x0 - half_inverse_ratio * previous["pred_x0"]
        else:
            denoised = pred_x0
        previous.update(pred_x0=pred_x0, h=h)
        sigma_ratio = math.sqrt((1.0 - alpha_bar_next) / (1.0 - alpha_bar))
        # Lu et al. 2022, eq. 10 / Alg. 2: exact linear part, exponential integrator for D_i.
        return sigma_ratio * x - math.sqrt(alpha_bar_next) * math.expm1(-h) * denoised

    return _reverse_chain(diffusion, model_fn, shape_or_noise, solver_step, generator, clip_denoised,
                          progress, return_trajectory, start_step, stop_step, device)


def quadratic_respacing(diffusion: GaussianDiffusion, count: int) -> GaussianDiffusion:
    """The process on DDIM's quadratic step sequence t_i ~ c i^2 (Song, Meng & Ermon 2021, App. D.2).

    Denser near t = 0, where the x_0 prediction changes fastest; the spacing that lets DPM-Solver++(2M)
    reach its accuracy at few steps (see benchmarks/README.md). Steps are made strictly increasing, so
    the process has exactly ``count`` steps (NFE). The betas of the kept steps are re-derived as in
    ``GaussianDiffusion.respaced``.
    """
    last = diffusion.num_timesteps - 1
    if not 2 <= count <= diffusion.num_timesteps:
        raise ValueError(f"quadratic_respacing: count={count} must lie in [2, {diffusion.num_timesteps}]")
    kept: list[int] = []
    for i in range(count):
        # Strictly increasing, and leaving room for the steps still to come below `last`.
        step = max(round(last * (i / (count - 1)) ** 2), kept[-1] + 1 if kept else 0)
        kept.append(min(step, last - (count - 1 - i)))
    alphas_cumprod = diffusion.alphas_cumprod[kept]
    # beta'_i = 1 - abar_{k_i} / abar_{k_{i-1}} (Nichol & Dhariwal 2021, §4).
    betas = 1.0 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
    return GaussianDiffusion(betas, prediction=diffusion.prediction, variance=diffusion.variance,
                             loss=diffusion.loss, timestep_map=diffusion.timestep_map[kept])
