"""Training the first stage of latent diffusion, and loading it frozen for the diffusion stage.

`AutoencoderMethod` trains `lit_diffsr.nets.autoencoder.AutoencoderKL` on
    L = |x - x̂|_1 + w_p LPIPS(x, x̂) + w_kl KL(q(z|x) || N(0, I)) / (C H W) + λ w_d L_G(x̂)
(Rombach et al. 2022, LDM §3 and App. G: LDM sums the per-pixel terms over pixels; dividing everything by
the C H W pixel values gives the same optimum with w_kl keeping LDM's meaning, e.g. 1e-6).
L_G = -mean D(x̂) is the hinge generator loss (Lim & Ye 2017) of a `PatchDiscriminator` D, switched on at
`discriminator.start_step`, and λ = ||∇ L_rec|| / (||∇ L_G|| + 1e-4) on the decoder's last layer is VQGAN's
adaptive weight (Esser et al. 2021, eq. 7). D minimises the hinge loss
    L_D = mean relu(1 - D(x)) + mean relu(1 + D(x̂))          (Lim & Ye 2017; VQGAN eq. 5 with hinge)
with its own optimiser, so the module uses Lightning's manual optimisation: both optimisers step once per
batch, and Lightning's `global_step` (hence `trainer.max_steps` and `start_step`) counts both.
Lightning cannot clip gradients under manual optimisation: `gradient_clip` does it here, and autoencoder
experiments set `trainer.gradient_clip_val: null`.

The latent scale factor s = 1 / std(z) (LDM §4.3.2, App. G) is tracked on the training latents as a
bias-corrected moving estimate (`scale_momentum`) and written into the network's `latent_scale` buffer at
every step, so every checkpoint carries the value that matches its weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import DiffusionMethod, SampleOutput, as_dict, build_net, load_method
from lit_diffsr.methods.configs import AutoencoderLossConfig, DiscriminatorConfig, settings
from lit_diffsr.nets.autoencoder import AutoencoderKL, FrozenAutoencoder, PatchDiscriminator


def hinge_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """L_D = mean relu(1 - D(x)) + mean relu(1 + D(x̂))  (Lim & Ye 2017, eq. 8)."""
    return F.relu(1.0 - real_scores).mean() + F.relu(1.0 + fake_scores).mean()


class AutoencoderMethod(DiffusionMethod):
    """First-stage training (see the module docstring).

    Args:
        net: `AutoencoderKL` config.
        loss: kl_weight (w_kl), perceptual_weight (w_p, 0 = no LPIPS), perceptual_net (vgg | alex),
            perceptual_weights (local path of the full LPIPS state_dict; null = the weights cache, see
            `lit_diffsr.metrics.weights`; never downloaded).
        discriminator: null (no adversarial term) or start_step, weight (w_d), channels, num_layers,
            norm_groups of the `PatchDiscriminator`.
        optim: as `DiffusionMethod` (LDM: Adam betas (0.5, 0.9)); used by both optimisers.
        gradient_clip: max gradient norm per optimiser step (null = no clipping).
        scale_momentum: decay of the moving latent-std estimate.
        sampler: unused (the smoke config sets `model.sampler.steps` for every experiment).
    """

    grid_shows_originals = True  # SampleGrid shows the originals above their reconstructions

    def __init__(
        self,
        net: Any,
        loss: dict | None = None,
        discriminator: dict | None = None,
        optim: dict | None = None,
        gradient_clip: float | None = 1.0,
        scale_momentum: float = 0.99,
        sampler: dict | None = None,
        val_sample_batches: int = 1,
    ):
        super().__init__(net, optim=optim, val_sample_batches=val_sample_batches)
        net, loss, discriminator, optim, sampler = map(as_dict, (net, loss, discriminator, optim, sampler))
        self.save_hyperparameters()  # plain containers: checkpoints load with weights_only=True
        if not isinstance(self.net, AutoencoderKL):
            raise ConfigError(f"model.net must be an AutoencoderKL config, got {type(self.net).__name__}")
        if not 0.0 <= scale_momentum < 1.0:
            raise ConfigError(f"model.scale_momentum={scale_momentum} must lie in [0, 1)")
        self.automatic_optimization = False
        self.loss_weights = settings(AutoencoderLossConfig, loss, "loss")
        self.gradient_clip = gradient_clip
        self.scale_momentum = scale_momentum
        self.discriminator_options = None
        self.discriminator = None
        if discriminator:
            self.discriminator_options = settings(DiscriminatorConfig, discriminator, "discriminator")
            options = self.discriminator_options
            self.discriminator = PatchDiscriminator(
                self.net.in_channels, options["channels"], options["num_layers"], options["norm_groups"]
            )
        # (weight, E[z], E[z^2]) of the bias-corrected moving average of the training latents.
        self.register_buffer("latent_moments", torch.zeros(3))
        # LPIPS is loaded in setup() when training or evaluating, and kept out of the state_dict (its frozen
        # weights are not part of the model, and a frozen autoencoder must load without them).
        self.__dict__["perceptual"] = None

    # -- set-up -----------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "predict" and self.loss_weights["perceptual_weight"] > 0 and self.perceptual is None:
            from lit_diffsr.metrics.perceptual import load_lpips

            lpips = load_lpips(self.loss_weights["perceptual_net"], self.loss_weights["perceptual_weights"])
            self.__dict__["perceptual"] = lpips.to(self.device)

    def configure_optimizers(self):
        autoencoder = super().configure_optimizers()
        if self.discriminator is None:
            return autoencoder
        discriminator = self.adamw(self.discriminator.parameters(), weight_decay=self.optim["weight_decay"])
        return [autoencoder["optimizer"], discriminator], [autoencoder["lr_scheduler"]]

    @property
    def discriminator_active(self) -> bool:
        return self.discriminator is not None and self.global_step >= self.discriminator_options["start_step"]

    # -- losses -----------------------------------------------------------------------------------
    def _adaptive_weight(
        self, reconstruction_loss: torch.Tensor, generator_loss: torch.Tensor
    ) -> torch.Tensor:
        """λ = ||∇_{G_L} L_rec|| / (||∇_{G_L} L_G|| + 1e-4), G_L the decoder's last layer (VQGAN eq. 7)."""
        layer = self.net.last_decoder_weight
        rec_grad = torch.autograd.grad(reconstruction_loss, layer, retain_graph=True)[0]
        gan_grad = torch.autograd.grad(generator_loss, layer, retain_graph=True)[0]
        return (rec_grad.norm() / (gan_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()

    def _losses(self, images: torch.Tensor, adversarial: bool) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """The autoencoder's loss terms, the reconstruction and the posterior mean."""
        reconstruction, posterior = self.net(images)
        weights = self.loss_weights
        l1 = (images - reconstruction).abs().mean()  # LDM App. G: L1 reconstruction
        reconstruction_loss = l1
        losses = {"l1": l1}
        if weights["perceptual_weight"] > 0:
            if self.perceptual is None:
                raise ConfigError(
                    "LPIPS is not loaded: call setup() first or set model.loss.perceptual_weight=0"
                )
            self.perceptual.to(images.device)
            perceptual = self.perceptual(reconstruction, images).mean()  # Zhang et al. 2018, eq. 1
            reconstruction_loss = reconstruction_loss + weights["perceptual_weight"] * perceptual
            losses["lpips"] = perceptual
        kl = posterior.kl().mean() / images[0].numel()  # per pixel value, see the module docstring
        losses["kl"] = kl
        loss = reconstruction_loss + weights["kl_weight"] * kl
        if adversarial:
            generator_loss = -self.discriminator(reconstruction).mean()  # hinge generator loss
            weight = (
                self._adaptive_weight(reconstruction_loss, generator_loss)
                * self.discriminator_options["weight"]
            )
            loss = loss + weight * generator_loss
            losses.update(generator=generator_loss, adaptive_weight=weight)
        losses["loss"] = loss
        return losses, reconstruction, posterior.mean

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """The loss without the adversarial term (validation; training goes through training_step)."""
        return self._losses(batch["hr"], adversarial=False)[0]

    # -- training ---------------------------------------------------------------------------------
    def _step(self, optimizer, loss: torch.Tensor) -> None:
        self.toggle_optimizer(optimizer)
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.gradient_clip:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.gradient_clip, gradient_clip_algorithm="norm"
            )
        optimizer.step()
        self.untoggle_optimizer(optimizer)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images = batch["hr"]
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        adversarial = self.discriminator_active
        losses, reconstruction, latents = self._losses(images, adversarial)
        self._step(optimizers[0], losses["loss"])
        self.lr_schedulers().step()
        if adversarial:
            scores_real = self.discriminator(images)
            scores_fake = self.discriminator(reconstruction.detach())
            losses["discriminator"] = hinge_discriminator_loss(scores_real, scores_fake)
            self._step(optimizers[1], losses["discriminator"])
        self.update_latent_scale(latents.detach())
        losses["latent_scale"] = self.net.latent_scale
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=len(images))
        # Not prog_bar: Lightning would read it back every step (a host-device sync); ProgressBar
        # (lit_diffsr.callbacks.progress) shows it, read at most once a second.
        self.log("loss", losses["loss"], logger=False, batch_size=len(images))
        return losses["loss"]

    @torch.no_grad()
    def update_latent_scale(self, latents: torch.Tensor) -> None:
        """Fold a batch into the moving (weight, E[z], E[z^2]); set s = 1 / std(z) (LDM §4.3.2)."""
        batch_moments = torch.stack(
            [torch.ones_like(latents.mean()), latents.mean(), latents.square().mean()]
        )
        self.latent_moments.mul_(self.scale_momentum).add_((1 - self.scale_momentum) * batch_moments.float())
        weight, mean, mean_square = self.latent_moments
        std = (mean_square / weight - (mean / weight) ** 2).clamp_min(1e-12).sqrt()
        self.net.latent_scale.fill_(1.0 / std)

    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """The reconstruction D(E(x)) of condition["hr"], from the posterior mean: deterministic, so `seed`
        changes nothing; there are no steps or options to choose."""
        if steps is not None or stop_step is not None or options:
            raise ConfigError(
                "AutoencoderMethod reconstructs in one pass: it takes no steps, stop_step or options"
            )
        return SampleOutput(self.net(condition["hr"], sample_posterior=False)[0].clamp(-1.0, 1.0))


def frozen_autoencoder(checkpoint: str | Path | None, config: Any = None) -> FrozenAutoencoder:
    """The autoencoder of a trained `AutoencoderMethod` checkpoint (EMA weights and its latent scale).

    `checkpoint=None` builds an UNTRAINED autoencoder from `config` (an `AutoencoderKL` config): for tests
    and smoke runs only, with a warning.
    """
    if checkpoint is not None:
        method = load_method(checkpoint, what="model.autoencoder_ckpt")
        if not isinstance(method, AutoencoderMethod):
            raise ConfigError(
                f"model.autoencoder_ckpt={str(checkpoint)!r} holds a {type(method).__name__}, not an "
                "AutoencoderMethod: pass a checkpoint of an autoencoder experiment (e.g. autoencoder_kl_f4)"
            )
        return FrozenAutoencoder(method.net)
    if not config:
        raise ConfigError(
            "set model.autoencoder_ckpt to a trained autoencoder checkpoint (or model.autoencoder)"
        )
    warnings.warn(
        "model.autoencoder_ckpt is null: using an UNTRAINED autoencoder built from model.autoencoder "
        "(for tests and smoke runs only; set model.autoencoder_ckpt=PATH for real runs)",
        stacklevel=2,
    )
    net = build_net(config)
    if not isinstance(net, AutoencoderKL):
        raise ConfigError(f"model.autoencoder must be an AutoencoderKL config, got {type(net).__name__}")
    return FrozenAutoencoder(net)
