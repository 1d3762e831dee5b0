"""SR3 / WaveGrad continuous noise-level conditioning.

The network is conditioned on the noise level sqrt(gamma) itself rather than on a step index, so one
trained model can be sampled with any schedule or step count (Chen et al. 2021, WaveGrad §3;
Saharia et al. 2022, SR3 §2.4). gamma_t = prod_{i <= t} alpha_i is the cumulative product of a discrete
schedule (0-indexed as ``GaussianDiffusion``: gamma_{-1} = 1 is clean data, t = 0 is one step of noise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from lit_diffsr.diffusion.gaussian_diffusion import GaussianDiffusion
from lit_diffsr.diffusion.losses import mean_flat
from lit_diffsr.diffusion.on_device import DeviceTables, draw_device, precise_dtype

VARIANTS = ("sqrt_gamma", "gamma")
LOSSES = ("mse", "l1")

NoiseLevelModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""model_fn(x_noisy, sqrt_gamma) -> predicted eps; sqrt_gamma is (B,) float."""


class ContinuousNoiseLevel:
    """Draws training noise levels between neighbouring entries of the table of sqrt(gamma_t).

    Args:
        betas: beta_t, t = 0..T-1 of the training schedule (SR3: linear 1e-6..1e-2, T = 2000).
        variant: how the level is drawn inside the interval of the drawn step t:
            ``"sqrt_gamma"``: sqrt(gamma) ~ U[sqrt(gamma_t), sqrt(gamma_{t-1})] (WaveGrad §3 and the public
            SR3 reimplementation); ``"gamma"``: gamma ~ U[gamma_t, gamma_{t-1}] (SR3 §2.4 as written).
    """

    def __init__(self, betas: np.ndarray | Sequence[float], variant: str = "sqrt_gamma") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"ContinuousNoiseLevel: variant={variant!r} is not one of {VARIANTS}")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0 or not np.all((betas > 0) & (betas < 1)):
            raise ValueError(
                "ContinuousNoiseLevel: betas must be a non-empty 1-D array with values in (0, 1)"
            )
        self.variant = variant
        self.num_timesteps = len(betas)
        gamma = np.cumprod(1.0 - betas)  # gamma_t = prod_{i <= t} alpha_i (SR3 §2.1)
        # Interval of step t: [gamma_t, gamma_{t-1}] with gamma_{-1} = 1.
        self.gamma_low = torch.from_numpy(gamma)
        self.gamma_high = torch.from_numpy(np.append(1.0, gamma[:-1]))
        self._tables = DeviceTables()

    def interval(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(gamma_t), sqrt(gamma_{t-1})) in float64: the bounds of the level drawn for step t."""
        t = t.cpu()
        return self.gamma_low[t].sqrt(), self.gamma_high[t].sqrt()

    def sample(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw t ~ U{0..T-1}, then the level in t's interval (WaveGrad §3; SR3 §2.4).

        Returns:
            (sqrt_gamma (B,) float32 on ``device``, t (B,) long on ``device``).
        """
        where = draw_device(device, generator)
        dtype = precise_dtype(where)
        t = torch.randint(self.num_timesteps, (batch_size,), generator=generator, device=where)
        u = torch.rand(batch_size, generator=generator, device=where, dtype=dtype)
        low = self._tables.get("gamma_low", self.gamma_low, where, dtype)[t]
        high = self._tables.get("gamma_high", self.gamma_high, where, dtype)[t]
        if self.variant == "sqrt_gamma":
            sqrt_gamma = low.sqrt() + u * (high.sqrt() - low.sqrt())
        else:
            sqrt_gamma = (low + u * (high - low)).sqrt()
        return sqrt_gamma.float().to(device), t.to(device)

    @staticmethod
    def q_sample(x0: torch.Tensor, sqrt_gamma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """y_tilde = sqrt(gamma) y_0 + sqrt(1 - gamma) eps (SR3 eq. 5 with continuous gamma)."""
        sqrt_gamma = sqrt_gamma.to(x0).reshape(-1, *([1] * (x0.ndim - 1)))
        return sqrt_gamma * x0 + (1.0 - sqrt_gamma**2).clamp(min=0.0).sqrt() * noise

    def training_losses(
        self,
        model_fn: NoiseLevelModelFn,
        x0: torch.Tensor,
        loss: str = "mse",
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample E || f(y_tilde, sqrt(gamma)) - eps ||_p^p, p = 2 ("mse") or 1 ("l1") (SR3 eq. 6).

        Returns:
            dict of (B,) tensors: ``loss``, ``mse`` (reported for both losses) and ``sqrt_gamma``.
        """
        if loss not in LOSSES:
            raise ValueError(f"training_losses: loss={loss!r} is not one of {LOSSES}")
        if noise is None:
            noise = torch.randn_like(x0)
        sqrt_gamma, _ = self.sample(len(x0), x0.device, generator)
        error = model_fn(self.q_sample(x0, sqrt_gamma, noise), sqrt_gamma) - noise
        mse = mean_flat(error**2)
        return {
            "loss": mse if loss == "mse" else mean_flat(error.abs()),
            "mse": mse,
            "sqrt_gamma": sqrt_gamma,
        }


def noise_levels_by_model_step(process: GaussianDiffusion) -> torch.Tensor:
    """sqrt(abar) of every step of a (possibly respaced) process, indexed by its model step.

    Samplers call ``model_fn(x_t, timestep_map[t])``; this table turns that back into the continuous level
    sqrt(gamma) = sqrt(abar_t) of the step being sampled, whatever the respacing (WaveGrad §3).
    """
    levels = torch.zeros(int(process.timestep_map.max()) + 1, dtype=torch.float64)
    levels[process.timestep_map] = torch.from_numpy(process.sqrt_alphas_cumprod)
    return levels
