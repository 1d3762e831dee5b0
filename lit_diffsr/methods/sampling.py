"""One diffusion process built from config, shared by the methods that train and sample a GaussianDiffusion.

`diffusion` keys: schedule (linear | cosine | sqrt_linear | linspace), num_timesteps, schedule_kwargs (e.g.
beta_start / beta_end), prediction (eps | x0 | v), variance (fixed_small | fixed_large | learned_range),
loss (mse | l1 | hybrid), timestep_sampler (uniform | loss_aware).
`sampler` keys: name (ancestral | ddim | dpm_solver_pp), steps (null = every training step, "ddim50", "250",
per-section counts, or "quadN" for N steps on DDIM's quadratic spacing, which DPM-Solver++ wants at few
steps: respacing re-derives the betas of the kept steps), eta (DDIM), clip_denoised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lit_diffsr.diffusion import (
    GaussianDiffusion,
    LossSecondMomentSampler,
    UniformSampler,
    get_beta_schedule,
    quadratic_respacing,
    sample_ancestral,
    sample_ddim,
    sample_dpm_solver_pp,
)
from lit_diffsr.errors import ConfigError

DIFFUSION_DEFAULTS = {
    "schedule": "cosine",
    "num_timesteps": 1000,
    "schedule_kwargs": {},
    "prediction": "eps",
    "variance": "learned_range",
    "loss": "hybrid",
    "timestep_sampler": "uniform",
}
SAMPLERS = {"ancestral": sample_ancestral, "ddim": sample_ddim, "dpm_solver_pp": sample_dpm_solver_pp}
SAMPLER_DEFAULTS = {"name": "ddim", "steps": "ddim50", "eta": 0.0, "clip_denoised": True}


def merge_config(defaults: dict, given: dict, key: str) -> dict:
    """`defaults` updated by `given`; a key not in `defaults` is an error naming `model.<key>`."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in model.{key}; allowed: {sorted(defaults)}")
    return {**defaults, **given}


class DiffusionSetup:
    """The training process, its timestep sampler and the (possibly respaced) sampling process."""

    def __init__(self, diffusion: dict, sampler: dict):
        self.config = merge_config(DIFFUSION_DEFAULTS, diffusion, "diffusion")
        self.sampler = merge_config(SAMPLER_DEFAULTS, sampler, "sampler")
        c = self.config
        betas = get_beta_schedule(c["schedule"], c["num_timesteps"], **dict(c["schedule_kwargs"]))
        self.process = GaussianDiffusion(
            betas, prediction=c["prediction"], variance=c["variance"], loss=c["loss"]
        )
        if c["timestep_sampler"] == "uniform":
            self.timestep_sampler = UniformSampler(c["num_timesteps"])
        elif c["timestep_sampler"] == "loss_aware":
            self.timestep_sampler = LossSecondMomentSampler(c["num_timesteps"])
        else:
            raise ConfigError(
                f"model.diffusion.timestep_sampler={c['timestep_sampler']!r}; use 'uniform' or 'loss_aware'"
            )
        if self.sampler["name"] not in SAMPLERS:
            raise ConfigError(f"model.sampler.name={self.sampler['name']!r}; use one of {sorted(SAMPLERS)}")
        self.set_sampling_steps(self.sampler["steps"])

    def set_sampling_steps(self, steps) -> None:
        """Respace the sampling process (`steps` as in improved-DDPM's space_timesteps; None = all steps)."""
        self.sampler["steps"] = steps
        if steps in (None, ""):
            self.sampling_process = self.process
        elif isinstance(steps, str) and steps.startswith("quad"):
            self.sampling_process = quadratic_respacing(self.process, int(steps[len("quad") :]))
        else:
            self.sampling_process = self.process.respaced(steps)

    def training_losses(self, model_fn: Callable, x0: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        t, weights = self.timestep_sampler.sample(len(x0), x0.device)
        terms = self.process.training_losses(model_fn, x0, t, **kwargs)
        if isinstance(self.timestep_sampler, LossSecondMomentSampler):
            self.timestep_sampler.update(t, terms["loss"].detach())
        out = {"loss": (terms["loss"] * weights).mean()}
        out.update({k: v.mean() for k, v in terms.items() if k != "loss" and torch.is_tensor(v)})
        return out

    def sample(self, model_fn: Callable, shape, device, seed: int | None = None, **kwargs) -> torch.Tensor:
        """Draw samples; a `seed` makes them reproducible whatever else consumed the global RNG."""
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        noise = torch.randn(shape, device=device, generator=generator)
        common = {"generator": generator, "clip_denoised": self.sampler["clip_denoised"], **kwargs}
        if self.sampler["name"] == "ddim":
            return sample_ddim(self.sampling_process, model_fn, noise, eta=self.sampler["eta"], **common)
        return SAMPLERS[self.sampler["name"]](self.sampling_process, model_fn, noise, **common)
