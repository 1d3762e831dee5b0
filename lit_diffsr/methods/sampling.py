"""One diffusion process built from config, shared by the methods that train and sample a GaussianDiffusion.

`diffusion` keys: schedule (linear | cosine | sqrt_linear | linspace), num_timesteps, schedule_kwargs (e.g.
beta_start / beta_end), prediction (eps | x0 | v), variance (fixed_small | fixed_large | learned_range),
loss (mse | l1 | hybrid), timestep_sampler (uniform | loss_aware).
`sampler` keys: name (ancestral | ddim | dpm_solver_pp), steps (null = every training step, "ddim50", "250",
per-section counts, or "quadN" for N steps on DDIM's quadratic spacing, which DPM-Solver++ wants at few
steps: respacing re-derives the betas of the kept steps), eta (DDIM), clip_denoised.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from lit_diffsr.diffusion import (
    GaussianDiffusion,
    LossSecondMomentSampler,
    ModelFn,
    UniformSampler,
    classifier_free_guidance,
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
# The sampler keys a `sample` call may override in its options (steps has its own argument).
SAMPLER_OPTIONS = ("name", "eta", "clip_denoised")


def merge_config(defaults: dict, given: dict, key: str) -> dict:
    """`defaults` updated by `given`; a key not in `defaults` is an error naming `model.<key>`."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in model.{key}; allowed: {sorted(defaults)}")
    return {**defaults, **given}


class Diffusion:
    """The training process, its timestep sampler and the sampling process a method samples with.

    `sampler` holds the defaults of every sampling call; `sample` takes per-call overrides (steps, name,
    eta, clip_denoised) without changing them, so a loaded method samples the same way for every caller.
    """

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
        self.check_sampler(self.sampler)
        self._respaced: dict[str, GaussianDiffusion] = {}
        self.set_sampling_steps(self.sampler["steps"])

    @staticmethod
    def check_sampler(sampler: dict) -> None:
        if sampler["name"] not in SAMPLERS:
            raise ConfigError(f"model.sampler.name={sampler['name']!r}; use one of {sorted(SAMPLERS)}")

    def set_sampling_steps(self, steps) -> None:
        """The default respacing of every later sample (`steps` as `sampling_process_for`)."""
        self.sampler["steps"] = steps
        self.sampling_process = self.respaced(steps)

    def sampling_process_for(self, steps) -> GaussianDiffusion:
        """The process a call with `steps` samples: the configured one for None, else `respaced(steps)`."""
        return self.sampling_process if steps is None else self.respaced(steps)

    def respaced(self, steps) -> GaussianDiffusion:
        """The process respaced to `steps` (improved-DDPM's space_timesteps: "ddim50", "250", per-section
        counts; "quadN" for DDIM's quadratic spacing; None, "" or "full" = every training step)."""
        if steps in (None, "", "full"):
            return self.process
        key = str(steps)
        if key not in self._respaced:
            if key.startswith("quad"):
                self._respaced[key] = quadratic_respacing(self.process, int(key[len("quad") :]))
            else:
                self._respaced[key] = self.process.respaced(steps)
        return self._respaced[key]

    def training_losses(self, model_fn: Callable, x0: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        t, weights = self.timestep_sampler.sample(len(x0), x0.device)
        terms = self.process.training_losses(model_fn, x0, t, **kwargs)
        if isinstance(self.timestep_sampler, LossSecondMomentSampler):
            self.timestep_sampler.update(t, terms["loss"].detach())
        out = {"loss": (terms["loss"] * weights).mean()}
        out.update({k: v.mean() for k, v in terms.items() if k != "loss" and torch.is_tensor(v)})
        return out

    def sample(
        self,
        model_fn: Callable,
        shape,
        device,
        seed: int | None = None,
        *,
        steps=None,
        stop_step: int | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> torch.Tensor:
        """Draw samples; a `seed` makes them reproducible whatever else consumed the global RNG.
        `steps` (None = the configured ones) and `overrides` of `sampler`'s other keys hold for this call
        only;
        `stop_step` ends the chain early (its x at that step, for a cascade's truncated hand-over)."""
        sampler = merge_config(self.sampler, dict(overrides or {}), "sampler")
        self.check_sampler(sampler)
        process = self.sampling_process_for(steps)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        noise = torch.randn(shape, device=device, generator=generator)
        common = {"generator": generator, "clip_denoised": sampler["clip_denoised"], "stop_step": stop_step}
        if sampler["name"] == "ddim":
            return sample_ddim(process, model_fn, noise, eta=sampler["eta"], **common)
        return SAMPLERS[sampler["name"]](process, model_fn, noise, **common)


def label_guided(
    net_fn: Callable, y: torch.Tensor | None, null_class: int | None, guidance_scale: float,
    shared: Mapping[str, torch.Tensor] | None = None,
) -> ModelFn:
    """model_fn(x_t, t) from net_fn(x_t, t, labels, **shared): classifier-free guidance (Ho & Salimans 2022,
    eq. 6) when there are labels and guidance_scale != 1, else the plain conditional (or unconditional)
    net."""
    shared = dict(shared or {})
    if y is None or guidance_scale == 1.0:
        return lambda x_t, t: net_fn(x_t, t, y, **shared)
    return classifier_free_guidance(net_fn, y, null_class, guidance_scale, shared)
