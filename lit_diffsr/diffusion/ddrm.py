"""DDRM sampling (Kawar et al. 2022, "Denoising Diffusion Restoration Models", eq. 7-8).

Restores x from y = H x + σ_y z with a pre-trained (unconditional or class-conditional) ε-prediction
diffusion model, using the SVD H = U diag(s) V^T of an ``SVDOperator`` (see ``ddrm_operators``).

Parametrisation: the paper writes DDRM for a variance-exploding process x_t = x_0 + σ_t ε; a
variance-preserving model (DDPM, ᾱ_t) gives one through x_t^VE = x_t^VP / √ᾱ_t with
σ_t = √((1 - ᾱ_t) / ᾱ_t) (Song, Meng & Ermon 2021 (DDIM), §4.3). The update below works on the spectral
VE state x̄_t = V^T x_t^VE, component by component, and calls the model on the VP state.
"""

from collections.abc import Callable, Sequence

import torch

from lit_diffsr.diffusion.ddrm_operators import SVDOperator
from lit_diffsr.diffusion.progress import report_step

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddrm_timesteps(num_timesteps: int, num_steps: int = 20) -> torch.Tensor:
    """The kept steps of a uniformly skipped schedule, descending (noisiest first):
    skip·(num_steps - 1), ..., skip, 0 with skip = num_timesteps // num_steps (as DDIM / DDRM's "uniform"
    skip). Steps are 0-indexed (t = 0 is one step of noise, the project's convention); LongTensor."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, num_timesteps={num_timesteps}], got {num_steps}")
    return (torch.arange(num_steps - 1, -1, -1) * (num_timesteps // num_steps)).long()


def _descending_steps(timesteps: Sequence[int] | torch.Tensor, num_timesteps: int) -> list[int]:
    steps = [int(t) for t in torch.as_tensor(timesteps).reshape(-1)]
    if not steps or len(set(steps)) != len(steps) or not all(0 <= t < num_timesteps for t in steps):
        raise ValueError(f"timesteps must be distinct steps in [0, {num_timesteps}) (len(alphas_cumprod)), "
                         f"got {steps}; use ddrm_timesteps(T, num_steps)")
    return sorted(steps, reverse=True)


@torch.no_grad()
def ddrm_sample(
    operator: SVDOperator,
    y: torch.Tensor,
    sigma_y: float,
    eps_fn: EpsFn,
    alphas_cumprod: torch.Tensor,
    timesteps: Sequence[int] | torch.Tensor,
    eta: float = 0.85,
    eta_b: float = 1.0,
    generator: torch.Generator | None = None,
    clip: bool = True,
    return_trajectory: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Draw x ~ p(x | y) with DDRM (Kawar et al. 2022, eq. 7-8).

    Symbols: ȳ = Σ^+ U^T y (the measurements in the spectral basis, 0 where s_i = 0), whose component i
    carries noise of std σ_y / s_i; x̄_0 = V^T x_θ, the model's clean estimate; σ_t, σ_next the VE noise
    levels of the current and the next kept step (σ = 0 after the last one).

    Args:
        operator: H with its SVD.
        y: measurements H x + σ_y z, shape (B, d) in the operator's order.
        sigma_y: σ_y >= 0, the std of the measurement noise.
        eps_fn: ``eps_fn(x_t, t) -> ε`` with x_t the VP state (B, C, H, W) and t a (B,) LongTensor of
            0-indexed steps; the caller wraps its model (keeps the ε channels of a learned-variance
            output, adds class labels).
        alphas_cumprod: the prior's ᾱ_t table, shape (T,), float64.
        timesteps: distinct kept steps in [0, T), in either order: they are visited from the noisiest
            (largest) down, then one last update to σ = 0. See ``ddrm_timesteps``.
        eta: η, the stochasticity of the missing and less-noisy-than-y components (0: deterministic).
        eta_b: η_b in [0, 1], the weight of ȳ in components noisier than y (1: take ȳ).
        generator: torch.Generator (on y's device) for reproducible noise.
        clip: clamp x_θ to [-1, 1] before each update (the returned sample is not clamped).
        return_trajectory: also return the VP states [x_T, ..., x_0] (the last one is the sample).

    Returns:
        The restored images (B, C, H, W); with ``return_trajectory``, (images, states).
    """
    abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    if abar.dim() != 1:
        raise ValueError(f"alphas_cumprod must be the 1-D table ᾱ_t of shape (T,), got {tuple(abar.shape)}")
    steps = _descending_steps(timesteps, abar.numel())
    y = operator.check_measurements(y)
    if sigma_y < 0 or not 0 <= eta <= 1 or not 0 <= eta_b <= 1:
        raise ValueError(f"need sigma_y >= 0 and eta, eta_b in [0, 1], got {sigma_y}, {eta}, {eta_b}")
    batch, image_shape = y.shape[0], (y.shape[0], *operator.input_shape)

    def noise() -> torch.Tensor:
        return torch.randn(batch, operator.input_dim, generator=generator, dtype=y.dtype, device=y.device)

    def vp_scale(step: int) -> float:  # √ᾱ_t; the clean image (step -1) has ᾱ = 1
        return 1.0 if step < 0 else float(abar[step]) ** 0.5

    def ve_sigma(step: int) -> float:  # σ_t = √((1 - ᾱ_t) / ᾱ_t), DDIM §4.3
        return 0.0 if step < 0 else float((1 - abar[step]) / abar[step]) ** 0.5

    inverse_singulars = operator.add_zeros(operator.inverse_singulars().to(y).unsqueeze(0))  # (1, D)
    observed = inverse_singulars > 0  # s_i > 0; the null space and zeroed s_i are missing
    y_bar = inverse_singulars * operator.add_zeros(operator.Ut(y))  # ȳ = Σ^+ U^T y, §3.1
    y_bar_std = sigma_y * inverse_singulars  # σ_y / s_i

    # Initialisation, eq. 7: observed components less noisy than σ_T start at ȳ plus the missing noise,
    # the others (missing, or noisier than σ_T) at N(0, σ_T²).
    sigma_start = ve_sigma(steps[0])
    from_y = observed & (y_bar_std < sigma_start)
    x_bar = torch.where(from_y, y_bar, 0.0) + torch.where(
        from_y, (sigma_start**2 - y_bar_std**2).clamp_min(0).sqrt(), sigma_start) * noise()
    x_t = vp_scale(steps[0]) * operator.V(x_bar).reshape(image_shape)
    states = [x_t]

    for done, (step, next_step) in enumerate(zip(steps, [*steps[1:], -1], strict=True), start=1):
        eps = eps_fn(x_t, torch.full((batch,), step, dtype=torch.long, device=y.device))
        if eps.shape != x_t.shape:
            raise ValueError(f"eps_fn must return ε of shape {tuple(x_t.shape)} (keep only the ε channels "
                             f"of a learned-variance model), got {tuple(eps.shape)}")
        sigma_t, sigma_next = ve_sigma(step), ve_sigma(next_step)
        x0 = x_t / vp_scale(step) - sigma_t * eps  # x_θ = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t, Ho et al. 2020 eq. 15
        if clip:
            x0 = x0.clamp(-1, 1)
        x_bar_0 = operator.Vt(x0)
        x_bar_t = operator.Vt(x_t / vp_scale(step))

        # Eq. 8, per spectral component. Missing (s_i = 0): DDIM on the model's ε̂ = (x̄_t - x̄_0) / σ_t.
        # Less noisy than y (σ_next < σ_y / s_i): DDIM towards ȳ, whose own noise is (ȳ - x̄_0) / (σ_y/s_i).
        # Noisier than y (σ_next >= σ_y / s_i): mix ȳ in with weight η_b and add the noise y lacks.
        noisier = observed & (y_bar_std <= sigma_next)
        less_noisy = observed & ~noisier
        direction = torch.where(less_noisy, (y_bar - x_bar_0) / torch.where(less_noisy, y_bar_std, 1.0),
                                (x_bar_t - x_bar_0) / sigma_t)
        ddim_mean = x_bar_0 + (1 - eta**2) ** 0.5 * sigma_next * direction
        observed_mean = (1 - eta_b) * x_bar_0 + eta_b * y_bar
        std = torch.where(noisier, (sigma_next**2 - (eta_b * y_bar_std) ** 2).clamp_min(0).sqrt(),
                          eta * sigma_next)
        x_bar = torch.where(noisier, observed_mean, ddim_mean) + std * noise()
        x_t = vp_scale(next_step) * operator.V(x_bar).reshape(image_shape)
        states.append(x_t)
        report_step(done, len(steps))

    return (x_t, states) if return_trajectory else x_t
