"""I²SB in the latent space of a frozen autoencoder (Liu et al. 2023; first stage of Rombach et al. 2022).

The bridge of `lit_diffsr.methods.i2sb.I2SB` runs between z0 = s E(hr) and z1 = s E(x1), x1 the degraded
image at the HR size (the upsampled LR image, built by I2SB's `degraded_endpoint`); the sample z0 is decoded,
x = D(z0 / s). Training, the bridge and its sampler are I2SB's; only the end points move to latent space.
Sizes in `net` are in output pixels, as for `LatentDiffusionSR` (divided by f here). Inpainting masks are
not supported in latent space.
"""

from __future__ import annotations

from typing import Any

import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.autoencoder import frozen_autoencoder
from lit_diffsr.methods.base import SampleOutput, as_dict
from lit_diffsr.methods.i2sb import I2SB
from lit_diffsr.methods.ldm_sr import latent_net


class LatentI2SB(I2SB):
    """I2SB between latents (see the module docstring).

    Args:
        net: UNet config, sizes in output pixels.
        autoencoder_ckpt, autoencoder: the frozen autoencoder, as `LatentDiffusionSR` (null checkpoint = an
            UNTRAINED autoencoder from `autoencoder`, for tests and smoke runs only).
        bridge, sampler, cond_x1, x1_upsample, init_from, optim, val_sample_batches: as `I2SB`
            (keep `sampler.clip_denoised: false`: latents are not in [-1, 1]).
    """

    def __init__(
        self,
        net: Any,
        autoencoder_ckpt: str | None = None,
        autoencoder: dict | None = None,
        bridge: dict | None = None,
        sampler: dict | None = None,
        cond_x1: bool = False,
        x1_upsample: str = "bicubic",
        init_from: str | None = None,
        optim: dict | None = None,
        val_sample_batches: int = 1,
    ):
        net, autoencoder, bridge, sampler, optim = map(as_dict, (net, autoencoder, bridge, sampler, optim))
        first_stage = frozen_autoencoder(autoencoder_ckpt, autoencoder)
        cond_channels = first_stage.latent_channels if cond_x1 else 0
        super().__init__(
            latent_net(net, first_stage, cond_channels),
            bridge=bridge,
            sampler=sampler,
            cond_x1=cond_x1,
            x1_upsample=x1_upsample,
            init_from=init_from,
            optim=optim,
            val_sample_batches=val_sample_batches,
        )
        # I2SB saved its own arguments (without the built net): save this class's, net config included.
        self.save_hyperparameters()
        if self.sampler["clip_denoised"]:
            raise ConfigError(
                "model.sampler.clip_denoised must be false for latent I2SB: latents are not in [-1, 1]"
            )
        self.autoencoder = first_stage

    def latent_endpoints(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """A batch of latents: "lr" = s E(x1) and, when the batch has it, "hr" = s E(hr)."""
        x1, mask = self.degraded_endpoint(batch, generator)
        if mask is not None:
            raise ConfigError("latent I2SB does not support inpainting masks: drop the mask degradation")
        # HR first: an autoencoder without a scale factor estimates it on the first images it encodes.
        latents = {"hr": self.autoencoder.encode(batch["hr"])} if "hr" in batch else {}
        latents["lr"] = self.autoencoder.encode(x1)
        return latents

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        # Same-size end points: I2SB uses "lr" as x1 unchanged (I²SB Alg. 1 on latents).
        return super().compute_losses(self.latent_endpoints(batch))

    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """As `I2SB.sample`, between latents; the decoded z0 (the decoder clamps, latents are not clamped)."""
        settings, generator = self.sampling_settings(seed, steps, stop_step, options)
        x1 = self.latent_endpoints(condition)["lr"]
        clip = 1.0 if settings["clip_denoised"] else None
        return SampleOutput(self.autoencoder.decode(self.sample_x0(x1, generator, None, clip, settings)))
