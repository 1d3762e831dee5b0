"""SR3 and the CDM cascade stage: what the network sees, losses, batched sampling, config errors."""

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import sample_ddim
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.super_resolution import SR3, CascadeStage
from lit_diffsr.nets import UNet
from tests.tiny_nets import TINY_UNET

TINY = {**TINY_UNET, "attention_resolutions": [], "cond_channels": 3}


class Spy(torch.nn.Module):
    """Wraps a UNet and records the arguments of every call."""

    def __init__(self, **net):
        super().__init__()
        self.inner = UNet(**{k: v for k, v in {**TINY, **net}.items() if k != "_target_"})
        self.in_channels, self.image_size = self.inner.in_channels, self.inner.image_size
        self.cond_channels, self.use_aug_level = self.inner.cond_channels, self.inner.use_aug_level
        self.calls = []

    def forward(self, x, t, **kwargs):
        self.calls.append({"x": x, "t": t, **kwargs})
        return self.inner(x, t, **kwargs)


def sr_batch(batch_size=4, scale=2, classes=False):
    torch.manual_seed(0)
    hr = torch.rand(batch_size, 3, 16, 16) * 2 - 1
    lr = torch.nn.functional.avg_pool2d(hr, scale)
    batch = {"hr": hr, "lr": lr, "name": [str(i) for i in range(batch_size)]}
    if classes:
        batch["y"] = torch.arange(batch_size) % 3
    return batch


def test_sr3_network_sees_noisy_hr_then_upsampled_lr_and_the_scaled_noise_level():
    net = Spy()
    method = SR3(net, scale_factor=2)
    batch = sr_batch()
    losses = method.compute_losses(batch)
    assert losses["loss"].ndim == 0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    call = net.calls[-1]
    torch.testing.assert_close(call["cond"], method.condition(batch["lr"]))
    assert call["cond"].shape == batch["hr"].shape and call["x"].shape == batch["hr"].shape
    # t is 1000 * sqrt(gamma): a float in (0, 1000], not a step index.
    assert call["t"].dtype == torch.float32 and ((call["t"] > 0) & (call["t"] <= 1000)).all()
    assert call["t"].unique().numel() == len(call["t"])  # continuous: no two samples share a level


@pytest.mark.parametrize(("sampler", "steps"), [("ancestral", "4"), ("ddim", "ddim4"), ("ancestral", None)])
def test_sr3_samples_any_schedule_with_the_level_of_each_step(sampler, steps):
    net = Spy()
    diffusion = {"num_timesteps": 20}
    method = SR3(net, diffusion=diffusion, sampler={"name": sampler, "steps": steps}, scale_factor=2).eval()
    out = method.generate({**sr_batch(), "seed": 0})
    assert out.shape == (4, 3, 16, 16) and torch.isfinite(out).all()
    process = method.diffusion.sampling_process
    seen = torch.stack([call["t"][0] for call in net.calls])
    expected = 1000 * np.sqrt(process.alphas_cumprod[::-1])  # sampled from the noisiest step down
    np.testing.assert_allclose(seen.numpy(), expected, rtol=1e-6)


class ExactDenoiser(torch.nn.Module):
    """The exact eps when x_0 is the conditioning image itself: (x_t - sqrt(g) cond) / sqrt(1 - g), with the
    level sqrt(g) read back from the network's t = 1000 sqrt(g) (a Dirac data distribution given lr)."""

    in_channels, cond_channels, image_size, use_aug_level = 3, 3, 16, False

    def forward(self, x, t, cond=None, **_):
        level = (t.double() / 1000).view(-1, 1, 1, 1)
        return ((x.double() - level * cond.double()) / (1 - level**2).sqrt()).to(x.dtype)


@pytest.mark.parametrize(
    ("sampler", "steps"), [("ddim", "ddim20"), ("ancestral", "100"), ("dpm_solver_pp", "quad10")]
)
def test_sr3_chain_with_the_exact_denoiser_returns_the_condition(sampler, steps):
    # Closed form through the whole SR3 path (levels per step, [x_t | cond] plumbing, the samplers) on the
    # published schedule: with the exact eps every sampler must land on x_0 = upsample(lr).
    method = SR3(ExactDenoiser(), sampler={"name": sampler, "steps": steps, "clip_denoised": False},
                 scale_factor=2).eval()
    batch = sr_batch()
    out = method.generate({**batch, "seed": 0})
    # atol: the net gets the level as float32 t = 1000 sqrt(g); its rounding near g = 1 bounds the exact eps
    torch.testing.assert_close(out, method.condition(batch["lr"]), rtol=0, atol=5e-3)


def test_sr3_sampling_is_batched_without_mixing_samples():
    method = SR3(
        TINY, diffusion={"num_timesteps": 20}, sampler={"name": "ddim", "steps": "ddim5"}, scale_factor=2
    )
    torch.nn.init.normal_(method.net.out[-1].weight, std=0.1)  # a non-trivial network output
    method.eval()
    batch = sr_batch()
    noise = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    process = method.diffusion.sampling_process

    def run(index):
        model_fn = method.model_fn(method.condition(batch["lr"][index]), None, 0)
        return sample_ddim(process, model_fn, noise[index])

    together = run(slice(None))
    one_by_one = torch.cat([run(slice(i, i + 1)) for i in range(4)])
    torch.testing.assert_close(together, one_by_one, rtol=1e-4, atol=1e-5)


def test_sr3_defaults_are_the_published_ones_and_errors_name_the_key():
    method = SR3(TINY, scale_factor=2)
    config = method.diffusion.config
    assert config["num_timesteps"] == 2000 and config["schedule"] == "linspace"
    assert method.diffusion.process.betas[0] == pytest.approx(1e-6)
    assert method.diffusion.process.betas[-1] == pytest.approx(1e-2)
    assert method.diffusion.sampling_process.num_timesteps == 100
    with pytest.raises(ConfigError, match="model.diffusion.prediction"):
        SR3(TINY, diffusion={"prediction": "v"})
    with pytest.raises(ConfigError, match="cond_channels"):
        SR3({**TINY, "cond_channels": 0})
    with pytest.raises(ConfigError, match="noise_level_variant"):
        SR3(TINY, noise_level_variant="log_snr")
    with pytest.raises(ConfigError, match="model.scale_factor=4"):
        SR3(TINY, scale_factor=4).compute_losses(sr_batch(scale=2))
    with pytest.raises(ConfigError, match="batch\\['lr'\\]"):
        SR3(TINY, scale_factor=2).compute_losses({"hr": torch.zeros(1, 3, 16, 16)})


NOISE = {"schedule": "cosine", "num_timesteps": 1000, "max_level": 300}


def cascade_stage(net=None, **kwargs):
    net = net or Spy(num_classes=3, use_aug_level=True)
    options = {"scale_factor": 2, "num_classes": 3, "augmentation": {"noise": NOISE}, **kwargs}
    diffusion = {"num_timesteps": 50, "variance": "fixed_small", "loss": "mse"}
    return CascadeStage(net, diffusion=diffusion, sampler={"steps": "ddim3"}, **options)


def test_cascade_stage_trains_on_random_levels_and_samples_at_the_chosen_one():
    net = Spy(num_classes=3, use_aug_level=True)
    method = cascade_stage(net, augmentation={"noise": NOISE, "sampling_level": 120})
    batch = sr_batch(batch_size=64, classes=True)
    method.train()
    method.compute_losses(batch)["loss"].backward()
    call = net.calls[-1]
    levels = call["aug_level"]
    assert levels.dtype == torch.float32 and levels.min() >= 0 and levels.max() <= 300
    assert levels.unique().numel() > 30  # amortised over many strengths
    torch.testing.assert_close(call["y"], batch["y"])
    # The condition is the upsampled z_s, not the clean lr, where s > 0.
    noisy = levels > 0
    assert not torch.allclose(call["cond"][noisy], method.condition(batch["lr"])[noisy])
    clean = levels == 0
    torch.testing.assert_close(call["cond"][clean], method.condition(batch["lr"])[clean])

    method.eval()
    net.calls.clear()
    samples = method.generate({**sr_batch(classes=True), "seed": 0})
    assert samples.shape == (4, 3, 16, 16)
    assert all((call["aug_level"] == 120).all() for call in net.calls)
    assert all(call["t"].dtype == torch.long for call in net.calls)  # discrete steps for the stage


def test_cascade_stage_blur_is_training_only_and_guidance_doubles_the_batch():
    net = Spy(num_classes=3)
    blur = {"probability": 1.0, "sigma": [0.5, 0.5]}
    method = cascade_stage(net, augmentation={"blur": blur}, guidance_scale=3.0, label_dropout=0.5)
    batch = sr_batch(classes=True)
    method.train()
    method.compute_losses(batch)
    assert not torch.allclose(net.calls[-1]["cond"], method.condition(batch["lr"]))
    method.eval()
    net.calls.clear()
    method.generate(batch)
    first = net.calls[0]
    assert len(first["x"]) == 8  # conditional and null-label halves in one batch
    assert (first["y"][4:] == 3).all()  # the null class
    torch.testing.assert_close(first["cond"][:4], method.condition(batch["lr"]))


def test_cascade_stage_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="use_aug_level"):
        cascade_stage(Spy(num_classes=3))
    with pytest.raises(ConfigError, match="augmentation.noise is null"):
        cascade_stage(Spy(num_classes=3, use_aug_level=True), augmentation={})
    with pytest.raises(ConfigError, match="sampling_level"):
        cascade_stage(augmentation={"noise": NOISE, "sampling_level": 5000})
    with pytest.raises(ConfigError, match="model.augmentation"):
        cascade_stage(augmentation={"noise": NOISE, "nois_level": 1})
