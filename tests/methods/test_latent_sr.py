"""LDM super-resolution: the latent UNet's sizes, training on frozen latents, the scale factor estimated
once, both conditioning modes, seeded sampling, tiling, and loading by path."""

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods import load_method
from lit_diffsr.methods.autoencoder import frozen_autoencoder
from lit_diffsr.methods.ldm_sr import LatentDiffusionSR
from lit_diffsr.nets.autoencoder import estimate_latent_scale
from lit_diffsr.ops.tiling import tiled_apply
from tests.tiny_nets import TINY_AUTOENCODER as AUTOENCODER
from tests.tiny_nets import TINY_UNET as UNET

DIFFUSION = {"schedule": "linear", "num_timesteps": 100, "variance": "fixed_small", "loss": "mse"}
SAMPLER = {"name": "ddim", "steps": "ddim4", "eta": 0.0, "clip_denoised": False}


def make_ldm(conditioning: str = "lr_pixels", **kwargs) -> LatentDiffusionSR:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the untrained-autoencoder warning
        return LatentDiffusionSR(
            UNET,
            autoencoder=AUTOENCODER,
            conditioning=conditioning,
            diffusion=DIFFUSION,
            sampler=SAMPLER,
            **kwargs,
        )


def sr_batch(size: int = 16, scale: int = 4, batch: int = 2) -> dict:
    generator = torch.Generator().manual_seed(0)
    hr = torch.rand(batch, 3, size, size, generator=generator) * 2 - 1
    lr = torch.nn.functional.avg_pool2d(hr, scale)
    return {"hr": hr, "lr": lr}


def test_latent_unet_sizes_and_channels():
    pixels, latent = make_ldm("lr_pixels"), make_ldm("lr_latent")
    # f = 2: image_size 16 -> 8 and attention at 8 output pixels -> 4 latent pixels (levels 8, 4).
    assert pixels.net.image_size == 8 and pixels.net.in_channels == pixels.net.out_channels == 4
    assert pixels.net.cond_channels == 3 and latent.net.cond_channels == 4
    with pytest.raises(ConfigError, match="divisible by the autoencoder's factor"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        LatentDiffusionSR(
            {**UNET, "attention_resolutions": [3]}, autoencoder=AUTOENCODER, diffusion=DIFFUSION
        )
    with pytest.raises(ConfigError, match="conditioning"):
        LatentDiffusionSR(UNET, autoencoder=AUTOENCODER, conditioning="lr_upsampled")


@pytest.mark.parametrize("conditioning", ["lr_pixels", "lr_latent"])
def test_training_loss_trains_the_unet_only(conditioning):
    method = make_ldm(conditioning)
    losses = method.compute_losses(sr_batch())
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is None for p in method.autoencoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.net.parameters())


def test_missing_scale_factor_is_estimated_once_from_the_first_batch():
    method = make_ldm()
    first, second = sr_batch(), sr_batch(size=16, batch=3)
    expected = estimate_latent_scale(method.autoencoder.net, first["hr"])
    with pytest.warns(UserWarning, match="estimated s"):
        method.compute_losses(first)
    assert float(method.autoencoder.net.latent_scale) == pytest.approx(expected, rel=1e-6)
    second["hr"] = second["hr"] * 0.1  # a very different batch does not change it again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.compute_losses(second)
    assert float(method.autoencoder.net.latent_scale) == pytest.approx(expected, rel=1e-6)
    assert "autoencoder.net.latent_scale" in method.state_dict()


@pytest.mark.parametrize("conditioning", ["lr_pixels", "lr_latent"])
def test_generate_is_seeded_and_in_range(conditioning):
    method = make_ldm(conditioning).eval()
    batch = {**sr_batch(), "seed": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first, again = method.generate(batch), method.generate(batch)
    assert first.shape == batch["hr"].shape and float(first.abs().max()) <= 1.0
    assert torch.equal(first, again)


def test_tiling_one_tile_reproduces_untiled_and_larger_inputs_are_tiled():
    method = make_ldm(tiling={"tile_size": 4, "overlap": 2}).eval()
    lr = sr_batch(size=16)["lr"]  # 4 px LR: exactly one tile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        untiled = method.sample_tile(lr, scale=4, seed=0)
        tiled = tiled_apply(lambda tile: method.sample_tile(tile, 4, seed=0), lr, 4, 2, scale=4)
        # x * w / w in float32 for a single tile: equal to rounding.
        torch.testing.assert_close(tiled, untiled, rtol=0, atol=1e-6)
        large = method.generate({"lr": sr_batch(size=40)["lr"], "seed": 0} | {"hr": sr_batch(size=40)["hr"]})
    assert large.shape == (2, 3, 40, 40) and torch.isfinite(large).all()


def test_batches_with_the_wrong_sizes_are_rejected():
    method = make_ldm()
    with pytest.raises(ConfigError, match="batch\\['lr'\\]"):
        method.compute_losses({"hr": torch.zeros(1, 3, 16, 16)})
    with pytest.raises(ValueError, match="integer multiple"):
        method.compute_losses({"hr": torch.zeros(1, 3, 16, 16), "lr": torch.zeros(1, 3, 5, 5)})
    with pytest.raises(ConfigError, match="without 'hr'"):
        method.generate({"lr": torch.zeros(1, 3, 4, 4)})


def test_checkpoint_loads_by_path_with_autoencoder_and_scale(tmp_path: Path):
    method = make_ldm()
    batches = [sr_batch() for _ in range(2)]
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.fit(method, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
        path = tmp_path / "ldm.ckpt"
        trainer.save_checkpoint(path)
        loaded = load_method(path)
    assert isinstance(loaded, LatentDiffusionSR)
    for name, value in method.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, rtol=0, atol=0)
    assert float(loaded.autoencoder.net.latent_scale) > 0
    # An LDM checkpoint is not an autoencoder checkpoint.
    with pytest.raises(ConfigError, match="not an AutoencoderMethod"):
        frozen_autoencoder(path)
