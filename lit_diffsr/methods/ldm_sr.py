"""Latent diffusion super-resolution (Rombach et al. 2022, LDM §4.4 "Super-Resolution with Latent Diffusion").

A Gaussian diffusion on the latents z0 = s E(hr) of a frozen autoencoder (`lit_diffsr.methods.autoencoder`),
epsilon prediction trained with L_LDM = E ||eps - eps_theta(z_t, t, c)||^2 (LDM eq. 2), DDIM sampling, and
the sample decoded back to pixels, x = D(z0 / s). The condition c is concatenated to z_t along channels:
- ``conditioning: lr_pixels``: the LR image itself at the latent resolution (LDM §4.4: f = 4 and 64 px LR
  for 256 px output put the LR image exactly at the latent size; other sizes are resized bicubically);
- ``conditioning: lr_latent``: the LR image bicubic-upsampled to the output size and encoded, s E(up(lr)).

Sizes in `net` are in output pixels like every other experiment (`image_size: ${data.resolution}`,
`attention_resolutions` in pixels at that size): the method divides them by the autoencoder's factor f and
sets the UNet's channels from the latent's. Inputs larger than the training crop can be sampled tile by
tile (`tiling`: tile size in LR pixels, overlap; see `lit_diffsr.ops.tiling`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.autoencoder import frozen_autoencoder
from lit_diffsr.methods.base import DiffusionMethod, SampleOutput, as_dict, build_net, check_options
from lit_diffsr.methods.configs import TilingConfig, settings
from lit_diffsr.methods.sampling import SAMPLER_OPTIONS, Diffusion
from lit_diffsr.nets.autoencoder import FrozenAutoencoder
from lit_diffsr.ops.resize import upsample_bicubic
from lit_diffsr.ops.tiling import tiled_apply

CONDITIONINGS = ("lr_pixels", "lr_latent")


def latent_net(net: Any, autoencoder: FrozenAutoencoder, cond_channels: int) -> torch.nn.Module:
    """The UNet of `net` (sizes in output pixels) built for latents: sizes divided by f, latent channels."""
    config = as_dict(net)
    factor = autoencoder.downsampling_factor
    sizes = [config.get("image_size"), *config.get("attention_resolutions", [])]
    if any(size is None or size % factor for size in sizes):
        raise ConfigError(
            f"model.net.image_size and attention_resolutions ({sizes}) are in output pixels and must be "
            f"divisible by the autoencoder's factor f={factor}"
        )
    channels = autoencoder.latent_channels
    config.update(
        image_size=config["image_size"] // factor,
        attention_resolutions=[size // factor for size in config.get("attention_resolutions", [])],
        in_channels=channels,
        out_channels=channels,
        cond_channels=cond_channels,
    )
    return build_net(config)


class LatentDiffusionSR(DiffusionMethod):
    """LDM super-resolution (see the module docstring).

    Args:
        net: UNet config, sizes in output pixels (channels and sizes are set for the latents).
        autoencoder_ckpt: checkpoint of a trained `AutoencoderMethod` (frozen, loaded by path). null builds an
            UNTRAINED autoencoder from `autoencoder` — for tests and smoke runs only (a warning says so).
        autoencoder: `AutoencoderKL` config used when `autoencoder_ckpt` is null.
        conditioning: lr_pixels | lr_latent.
        diffusion, sampler: as `lit_diffsr.methods.sampling.Diffusion` (latents are not in [-1, 1]:
            keep `sampler.clip_denoised: false`).
        tiling: tile_size (LR pixels; null = never tile) and overlap (LR pixels) for large inputs.
    """

    def __init__(
        self,
        net: Any,
        autoencoder_ckpt: str | None = None,
        autoencoder: dict | None = None,
        conditioning: str = "lr_pixels",
        diffusion: dict | None = None,
        sampler: dict | None = None,
        tiling: dict | None = None,
        optim: dict | None = None,
        val_sample_batches: int = 1,
    ):
        if conditioning not in CONDITIONINGS:
            raise ConfigError(f"model.conditioning={conditioning!r}; use one of {', '.join(CONDITIONINGS)}")
        net, autoencoder, diffusion, sampler, tiling, optim = map(
            as_dict, (net, autoencoder, diffusion, sampler, tiling, optim)
        )
        first_stage = frozen_autoencoder(autoencoder_ckpt, autoencoder)
        cond_channels = (
            first_stage.net.in_channels if conditioning == "lr_pixels" else first_stage.latent_channels
        )
        super().__init__(
            latent_net(net, first_stage, cond_channels), optim=optim, val_sample_batches=val_sample_batches
        )
        self.save_hyperparameters()  # plain containers: checkpoints load with weights_only=True
        # A submodule: the LDM checkpoint holds the autoencoder weights and its scale factor.
        self.autoencoder = first_stage
        self.conditioning = conditioning
        self.diffusion = Diffusion(diffusion, sampler)
        self.tiling = settings(TilingConfig, tiling, "tiling")

    # -- conditioning -----------------------------------------------------------------------------
    def condition(self, lr: torch.Tensor, scale: int) -> torch.Tensor:
        """c for the UNet, at the latent size of the output (LR size * r / f)."""
        factor = self.autoencoder.downsampling_factor
        height, width = lr.shape[-2] * scale, lr.shape[-1] * scale
        if height % factor or width % factor:
            raise ValueError(
                f"the output size {height}x{width} (lr {tuple(lr.shape[-2:])} x {scale}) must be divisible "
                f"by the autoencoder's f={factor}"
            )
        if self.conditioning == "lr_latent":
            return self.autoencoder.encode(upsample_bicubic(lr, scale))
        latent_size = (height // factor, width // factor)
        if tuple(lr.shape[-2:]) == latent_size:
            return lr
        return F.interpolate(lr, size=latent_size, mode="bicubic", align_corners=False, antialias=True).clamp(
            -1, 1
        )

    # -- DiffusionMethod --------------------------------------------------------------------------
    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        scale = self.upscale_factor(batch)
        latents = self.autoencoder.encode(batch["hr"])
        cond = self.condition(batch["lr"], scale)
        # LDM eq. 2 (eps prediction, or what model.diffusion asks for) on z0 = s E(hr).
        return self.diffusion.training_losses(lambda z_t, t: self.net(z_t, t, cond=cond), latents)

    def sample_tile(
        self, lr: torch.Tensor, scale: int, seed: int | None = None, steps=None, options: dict | None = None
    ) -> torch.Tensor:
        """One SR sample of `lr` in pixels: DDIM in latent space, then D(z0 / s)."""
        factor = self.autoencoder.downsampling_factor
        # Without a trained scale, estimate it on the upsampled LR image (the only images at hand).
        self.autoencoder.ensure_scale(upsample_bicubic(lr, scale))
        cond = self.condition(lr, scale)
        shape = (
            len(lr),
            self.autoencoder.latent_channels,
            lr.shape[-2] * scale // factor,
            lr.shape[-1] * scale // factor,
        )
        latents = self.diffusion.sample(
            lambda z_t, t: self.net(z_t, t, cond=cond), shape, device=lr.device, seed=seed, steps=steps,
            overrides=options,
        )
        return self.autoencoder.decode(latents)

    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """SR samples of `condition["lr"]` in pixels, tile by tile when it is larger than `tiling.tile_size`;
        options: the sampler's name, eta, clip_denoised."""
        if stop_step is not None:
            raise ConfigError("LatentDiffusionSR decodes finished latents: it has no stop_step")
        options = check_options(options, SAMPLER_OPTIONS, type(self).__name__)
        scale = self.upscale_factor(condition)
        lr, tile = condition["lr"], self.tiling["tile_size"]

        def sample_lr(lr_tile: torch.Tensor) -> torch.Tensor:
            return self.sample_tile(lr_tile, scale, seed, steps, options)

        if tile is None or max(lr.shape[-2:]) <= tile:
            return SampleOutput(sample_lr(lr))
        return SampleOutput(tiled_apply(sample_lr, lr, tile, self.tiling["overlap"], scale))
