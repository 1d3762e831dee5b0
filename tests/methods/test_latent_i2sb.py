"""Latent I²SB: I2SB's bridge between encoded end points, decoded samples, and its configuration."""

import warnings

import pytest
import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.latent_i2sb import LatentI2SB
from tests.tiny_nets import TINY_AUTOENCODER as AUTOENCODER
from tests.tiny_nets import TINY_UNET as UNET


def make_latent_i2sb(**kwargs) -> LatentI2SB:
    torch.manual_seed(0)
    options = {"sampler": {"steps": 3, "seed": 0}, "bridge": {"n_steps": 100}, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the untrained-autoencoder warning
        return LatentI2SB(UNET, autoencoder=AUTOENCODER, **options)


def sr_batch() -> dict:
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4)}


def test_end_points_are_the_encoded_hr_and_upsampled_lr():
    method = make_latent_i2sb()
    batch = sr_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the scale factor is estimated on the first batch
        latents = method.latent_endpoints(batch)
    x1_pixels, _ = method.degraded_endpoint(batch)
    torch.testing.assert_close(latents["hr"], method.autoencoder.encode(batch["hr"]))
    torch.testing.assert_close(latents["lr"], method.autoencoder.encode(x1_pixels))
    assert latents["lr"].shape == (2, 4, 8, 8)  # f = 2


def test_training_loss_trains_the_unet_only_and_samples_decode_to_pixels():
    method = make_latent_i2sb(cond_x1=True)
    assert method.net.cond_channels == 4 and method.net.image_size == 8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loss = method.compute_losses(sr_batch())["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in method.autoencoder.parameters())
    method.eval()
    first, again = method.generate(sr_batch()), method.generate(sr_batch())
    assert first.shape == (2, 3, 16, 16) and float(first.abs().max()) <= 1.0
    assert torch.equal(first, again)  # sampler.seed = 0


def test_hyper_parameters_hold_the_config_not_the_built_net():
    method = make_latent_i2sb()
    assert method.hparams["net"]["image_size"] == 16  # output pixels, divided by f when built
    assert method.hparams["autoencoder"]["channel_mult"] == [1, 2]


def test_clamping_latents_and_masks_are_rejected():
    with pytest.raises(ConfigError, match="clip_denoised"):
        make_latent_i2sb(sampler={"steps": 3, "clip_denoised": True})
    batch = {**sr_batch(), "lr": sr_batch()["hr"], "mask": torch.ones(2, 1, 16, 16)}
    with pytest.raises(ConfigError, match="inpainting"):
        make_latent_i2sb().latent_endpoints(batch)
