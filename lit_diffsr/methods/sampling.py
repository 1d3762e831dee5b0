"""One diffusion process built from config, shared by the methods that train and sample a GaussianDiffusion.

The keys of `diffusion` and `sampler`, their defaults and checks: `lit_diffsr.methods.configs`
(`GaussianDiffusionConfig`, `GaussianSamplerConfig`; SR3's own defaults in its subclasses). Respacing
re-derives the betas of the kept steps.
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
from lit_diffsr.methods.configs import GaussianDiffusionConfig, GaussianSamplerConfig, settings

# The Gaussian diffusion samplers by `model.sampler.name` (configs.GAUSSIAN_SAMPLERS lists the names).
SAMPLERS = {"ancestral": sample_ancestral, "ddim": sample_ddim, "dpm_solver_pp": sample_dpm_solver_pp}

# The sampler keys a `sample` call may override in its options (steps has its own argument).
SAMPLER_OPTIONS = ("name", "eta", "clip_denoised")


class Diffusion:
    """The training process, its timestep sampler and the sampling process a method samples with.

    `sampler` holds the defaults of every sampling call; `sample` takes per-call overrides (steps, name,
    eta, clip_denoised) without changing them, so a loaded method samples the same way for every caller.
    """

    def __init__(
        self,
        diffusion: Any,
        sampler: Any,
        diffusion_config: type[GaussianDiffusionConfig] = GaussianDiffusionConfig,
        sampler_config: type[GaussianSamplerConfig] = GaussianSamplerConfig,
    ):
        self.config = settings(diffusion_config, diffusion, "diffusion")
        self.sampler_config = sampler_config
        self.sampler = settings(sampler_config, sampler, "sampler")
        c = self.config
        betas = get_beta_schedule(c["schedule"], c["num_timesteps"], **dict(c["schedule_kwargs"]))
        self.process = GaussianDiffusion(
            betas, prediction=c["prediction"], variance=c["variance"], loss=c["loss"]
        )
        # How training draws t (the data sampler and the diffusion sampler are other things).
        loss_aware = c["timestep_sampler"] == "loss_aware"
        timestep_sampler = LossSecondMomentSampler if loss_aware else UniformSampler
        self.timestep_sampler = timestep_sampler(c["num_timesteps"])
        self._respaced: dict[str, GaussianDiffusion] = {}
        self.set_sampling_steps(self.sampler["steps"])

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
        process: GaussianDiffusion | None = None,
        start: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Draw samples; a `seed` makes them reproducible whatever else consumed the global RNG.
        `steps` (None = the configured ones) and `overrides` of `sampler`'s other keys hold for this call
        only;
        `stop_step` ends the chain early (its x at that step, for a cascade's truncated hand-over).
        `process` replaces the sampling process (SR3's inference schedule, whose steps are its own) and
        `start(noise)` the chain's first state (default: the standard normal `noise` itself)."""
        sampler = settings(self.sampler_config, {**self.sampler, **(overrides or {})}, "sampler")
        process = process if process is not None else self.sampling_process_for(steps)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        noise = torch.randn(shape, device=device, generator=generator)
        first = noise if start is None else start(noise)
        common = {"generator": generator, "clip_denoised": sampler["clip_denoised"], "stop_step": stop_step}
        if sampler["name"] == "ddim":
            return sample_ddim(process, model_fn, first, eta=sampler["eta"], **common)
        return SAMPLERS[sampler["name"]](process, model_fn, first, **common)


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
