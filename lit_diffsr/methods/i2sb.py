"""I²SB: image-to-image Schrödinger bridge (Liu et al. 2023) as a thin method over `SchrodingerBridge`.

The bridge runs between the clean image x0 = batch["hr"] (step 0) and a degraded image x1 (step N-1)
built from the batch:
- super-resolution (batch["lr"] smaller than the HR size): lr upsampled back to the HR size, bicubic by
  default (`x1_upsample: nearest` is what the official I²SB code uses);
- same-size restoration (JPEG, blur): batch["lr"] as is;
- inpainting (batch["mask"], 1 = observed): the observed pixels, the missing ones filled with N(0, I)
  noise as the official I²SB does, so x1 says nothing about the hole. The loss covers the missing
  region only and the sampler re-imposes the observed pixels after every step.
With `cond_x1` the network also sees x1 (concatenated to x_t through the UNet's `cond_channels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from lit_diffsr.diffusion import SchrodingerBridge
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import DiffusionMethod, SampleOutput, as_dict, check_options
from lit_diffsr.methods.configs import BridgeConfig, BridgeSamplerConfig, settings
from lit_diffsr.nets.loading import check_init_file, load_net_weights
from lit_diffsr.ops.resize import upsample_bicubic

X1_UPSAMPLING = ("bicubic", "nearest")
# The network's time input: the step n, or NVlabs' noise_levels[n] = N * linspace(1e-4, 1, N)[n] (I²SB's
# runner / network code), which their released checkpoints were trained with.
TIME_INPUTS = ("step", "noise_level")
I2SB_T0 = 1e-4


class I2SB(DiffusionMethod):
    """I²SB training (Liu et al. 2023, Alg. 1) and sampling (Alg. 2).

    Args:
        net: UNet config; its `cond_channels` is set from `cond_x1` (= in_channels or 0).
        bridge: n_steps (N), beta_max, beta_min of `SchrodingerBridge`.
        sampler: steps (NFE, 1 to N-1), ot_ode (noise-free bridge, used for training too, as I²SB's
            --ot-ode), clip_denoised (clamp x̂0 to [-1, 1]), seed (sampling noise; null = global RNG).
        cond_x1: also feed x1 to the network.
        x1_upsample: how a smaller batch["lr"] is brought to the HR size: bicubic | nearest.
        init_from: path of a checkpoint to initialise the network from when training starts (not on resume).
        time_input: "step" (the net sees n) or "noise_level" (N · linspace(1e-4, 1, N)[n], NVlabs' code);
            a checkpoint's own value wins when one is loaded (`convert i2sb` writes noise_level).
    """

    def __init__(
        self,
        net: Any,
        bridge: dict | None = None,
        sampler: dict | None = None,
        cond_x1: bool = False,
        x1_upsample: str = "bicubic",
        init_from: str | None = None,
        time_input: str = "step",
        optim: dict | None = None,
        val_sample_batches: int = 1,
    ):
        if not isinstance(net, torch.nn.Module):
            net = as_dict(net)
            net["cond_channels"] = net.get("in_channels", 3) if cond_x1 else 0
        super().__init__(net, optim=optim, val_sample_batches=val_sample_batches)
        bridge, sampler, optim = map(as_dict, (bridge, sampler, optim))
        self.save_hyperparameters(ignore=[] if isinstance(net, dict) else ["net"])
        expected_cond = self.net.in_channels if cond_x1 else 0
        if self.net.cond_channels != expected_cond:
            raise ConfigError(f"model.cond_x1={cond_x1} needs a net with cond_channels={expected_cond}")
        if x1_upsample not in X1_UPSAMPLING:
            raise ConfigError(f"model.x1_upsample={x1_upsample!r}; use one of {', '.join(X1_UPSAMPLING)}")
        try:
            self.bridge = SchrodingerBridge(**settings(BridgeConfig, bridge, "bridge"))
        except ValueError as error:
            raise ConfigError(f"model.bridge: {error}") from None
        self.sampler = settings(BridgeSamplerConfig, sampler, "sampler")
        self.set_sampling_steps(self.sampler["steps"])
        self.cond_x1 = cond_x1
        self.x1_upsample = x1_upsample
        self.init_from = init_from
        self.set_time_input(time_input)

    def set_time_input(self, time_input: str) -> None:
        if time_input not in TIME_INPUTS:
            raise ConfigError(f"model.time_input={time_input!r}; use one of {', '.join(TIME_INPUTS)}")
        self.time_input = time_input
        n_steps = self.bridge.n_steps
        # float32 as NVlabs computes it, so their networks see the very values they were trained on
        self.noise_levels = torch.linspace(I2SB_T0, 1.0, n_steps) * n_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """The time input is a property of the trained weights: take the checkpoint's."""
        super().on_load_checkpoint(checkpoint)
        saved = (checkpoint.get("hyper_parameters") or {}).get("time_input")
        if saved is not None and saved != self.time_input:
            self.set_time_input(saved)

    def set_sampling_steps(self, steps: int | str) -> None:
        """Use `steps` network evaluations (NFE) per sample by default."""
        self.sampler["steps"] = self.checked_nfe(steps)

    def checked_nfe(self, steps: int | str) -> int:
        """`steps` as a number of network evaluations (NFE), 1 to N-1."""
        try:
            nfe = int(steps)
        except (TypeError, ValueError):
            nfe = None
        if nfe is None or not 1 <= nfe <= self.bridge.n_steps - 1:
            raise ConfigError(
                f"model.sampler.steps={steps!r} must be an integer NFE in [1, {self.bridge.n_steps - 1}]"
            )
        return nfe

    def initialises_from_file(self) -> bool:
        """A fresh fit (not a resume) with model.init_from set."""
        trainer = self._trainer
        fitting = trainer is not None and trainer.state.fn == "fit"
        return bool(self.init_from) and fitting and trainer.ckpt_path is None

    def prepare_data(self) -> None:
        # Runs before the DataModule reads its data: a missing weights file is the first error reported.
        if self.initialises_from_file():
            check_init_file(self.init_from)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.initialises_from_file():
            load_net_weights(self.net, self.init_from)

    # -- the bridge's end points ----------------------------------------------------------------
    def degraded_endpoint(
        self, batch: dict, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x1 at the HR size, and the inpainting mask (1 = observed) or None (see the module docstring)."""
        if "lr" not in batch:
            raise ConfigError(
                "I2SB needs the degraded image batch['lr']: set data.degradation (e.g. "
                "[{type: downsample, scale: 4}]) or use data.dataset=paired"
            )
        x1 = batch["lr"]
        scale = self.upscale_factor(batch)
        if scale > 1 and self.x1_upsample == "bicubic":
            x1 = upsample_bicubic(x1, scale)
        elif scale > 1:
            x1 = F.interpolate(x1, scale_factor=scale, mode="nearest")
        mask = batch.get("mask")
        if mask is None:
            return x1, None
        if mask.shape[-2:] != x1.shape[-2:]:
            raise ValueError(f"batch['mask'] {tuple(mask.shape)} must have x1's size {tuple(x1.shape[-2:])}")
        noise = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
        return mask * x1 + (1 - mask) * noise, mask

    def network_output(self, x_t: torch.Tensor, step: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """ε(x_t, t) ≈ (x_t - x0) / σ_t; a learn_sigma net's extra channels are not used by the bridge."""
        time = step
        if self.time_input == "noise_level":
            time = self.noise_levels.to(x_t.device)[step]
        output = self.net(x_t, time, cond=x1 if self.cond_x1 else None)
        return output[:, : self.net.out_channels]

    # -- DiffusionMethod ------------------------------------------------------------------------
    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        x0 = batch["hr"]
        x1, mask = self.degraded_endpoint(batch)
        step = torch.randint(0, self.bridge.n_steps, (len(x0),), device=x0.device)  # I²SB Alg. 1: t ~ U
        x_t = self.bridge.q_sample(step, x0, x1, ot_ode=self.sampler["ot_ode"])  # I²SB eq. 11
        target = self.bridge.training_target(step, x0, x_t)  # (x_t - x0) / σ_t, I²SB Alg. 1
        squared_error = (self.network_output(x_t, step, x1) - target) ** 2
        if mask is None:
            return {"loss": squared_error.mean()}
        # Inpainting: only the missing pixels are learnt (the observed ones are re-imposed when sampling).
        missing = (1 - mask).expand_as(squared_error)
        return {"loss": (squared_error * missing).sum() / missing.sum().clamp_min(1.0)}

    def sampling_settings(
        self, seed: int | None, steps: int | str | None, stop_step: int | None, options: Mapping | None
    ) -> tuple[dict, torch.Generator | None]:
        """This call's sampler settings (model.sampler with `steps` and `options` over it) and the noise's
        generator (`seed`, else model.sampler.seed, else the global RNG)."""
        if stop_step is not None:
            raise ConfigError(f"{type(self).__name__} samples a bridge, not a Gaussian chain: no stop_step")
        options = check_options(options, ("ot_ode", "clip_denoised"), type(self).__name__)
        settings = {**self.sampler, **options}
        if steps is not None:
            settings["steps"] = self.checked_nfe(steps)
        seed = settings["seed"] if seed is None else seed
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))
        return settings, generator

    def sample_x0(
        self,
        x1: torch.Tensor,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
        clip: float | None = None,
        settings: dict | None = None,
    ) -> torch.Tensor:
        """I2SB sampling (Liu et al. 2023, Alg. 2) from x1 over settings["steps"] NFE (default model.sampler),
        unclamped."""

        def predict_x0(x_n: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            return self.bridge.predict_x0(step, x_n, self.network_output(x_n, step, x1), clip=clip)

        settings = settings or self.sampler
        nfe, ot_ode = settings["steps"], settings["ot_ode"]
        return self.bridge.sample(x1, predict_x0, nfe, ot_ode=ot_ode, generator=generator, mask=mask)

    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """x0 from the degraded image of `condition` ("lr", and "mask" for inpainting); `steps` is the NFE;
        options: ot_ode, clip_denoised."""
        settings, generator = self.sampling_settings(seed, steps, stop_step, options)
        x1, mask = self.degraded_endpoint(condition, generator)
        clip = 1.0 if settings["clip_denoised"] else None
        return SampleOutput(self.sample_x0(x1, generator, mask, clip, settings).clamp(-1.0, 1.0))
