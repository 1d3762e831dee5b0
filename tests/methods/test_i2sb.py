"""I2SB method: the end point x1 built from a batch, the (masked) loss, sampling with a perfect x0 predictor,
configuration errors and initialisation from a checkpoint."""

import pytest
import torch
from torch import nn

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.i2sb import I2SB
from lit_diffsr.nets.loading import load_net_weights
from lit_diffsr.ops.resize import upsample_bicubic
from tests.tiny_nets import TINY_UNET


class PerfectPredictor(nn.Module):
    """Knows x0: returns the regression label (x_t - x0) / σ_t exactly, so x̂0 = x0 (I²SB Alg. 1)."""

    in_channels = out_channels = 3

    def __init__(self, x0: torch.Tensor, std_fwd: torch.Tensor, cond_channels: int = 0):
        super().__init__()
        self.x0, self.std_fwd, self.cond_channels = x0, std_fwd, cond_channels
        self.conds: list = []

    def forward(self, x, t, y=None, cond=None):
        self.conds.append(cond)
        return (x - self.x0) / self.std_fwd[t].float().view(-1, 1, 1, 1)


class LearnableOutput(nn.Module):
    """Outputs a free tensor, to read the loss's gradient with respect to each predicted pixel."""

    in_channels = out_channels = 3
    cond_channels = 0

    def __init__(self, shape):
        super().__init__()
        self.output = nn.Parameter(torch.zeros(shape))

    def forward(self, x, t, y=None, cond=None):
        return self.output


def oracle_method(x0: torch.Tensor, **kwargs) -> I2SB:
    bridge = kwargs.pop("bridge", {})
    probe = I2SB(LearnableOutput(x0.shape), bridge=bridge)  # only for its std_fwd table
    return I2SB(PerfectPredictor(x0, probe.bridge.std_fwd), bridge=bridge, **kwargs)


def sr_batch(batch_size: int = 2, size: int = 16, scale: int = 4, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    hr = torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1
    return {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, scale)}


def inpainting_batch(seed: int = 0) -> dict:
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    mask = torch.ones(2, 1, 16, 16)
    mask[..., 4:12, 4:12] = 0  # centre box missing, 1 = observed
    return {"hr": hr, "lr": hr * mask, "mask": mask}


# ------------------------------------------------------------------------------------------- x1
def test_sr_endpoint_is_the_upsampled_lr():
    batch = sr_batch()
    method = I2SB(TINY_UNET)
    x1, mask = method.degraded_endpoint(batch)
    assert mask is None
    torch.testing.assert_close(x1, upsample_bicubic(batch["lr"], 4))
    nearest = I2SB(TINY_UNET, x1_upsample="nearest").degraded_endpoint(batch)[0]
    torch.testing.assert_close(nearest, batch["lr"].repeat_interleave(4, -1).repeat_interleave(4, -2))


def test_same_size_restoration_uses_lr_as_is():
    hr = torch.rand(2, 3, 16, 16) * 2 - 1
    x1, _ = I2SB(TINY_UNET).degraded_endpoint({"hr": hr, "lr": hr.flip(-1)})
    assert torch.equal(x1, hr.flip(-1))


def test_inpainting_endpoint_keeps_observed_pixels_and_fills_the_hole_with_noise():
    batch = inpainting_batch()
    batch["hr"] = batch["lr"] = torch.zeros(64, 3, 16, 16)
    batch["mask"] = batch["mask"][:1].expand(64, -1, -1, -1)
    x1, mask = I2SB(TINY_UNET).degraded_endpoint(batch, torch.Generator().manual_seed(0))
    observed = mask.expand_as(x1).bool()
    assert torch.equal(x1[observed], batch["lr"][observed]) and torch.equal(mask, batch["mask"])
    hole = x1[~observed]  # 64 * 3 * 64 = 12288 N(0, 1) draws: mean and std within ~5 standard errors
    assert abs(hole.mean()) < 0.05 and abs(hole.std() - 1) < 0.05


def test_a_batch_without_lr_names_the_data_setting():
    with pytest.raises(ConfigError, match="data.degradation"):
        I2SB(TINY_UNET).compute_losses({"hr": torch.zeros(2, 3, 16, 16)})


# ------------------------------------------------------------------------------------------ loss
def test_perfect_predictor_has_zero_loss():
    """On the OT-ODE bridge x_t is deterministic, so the label (x_t - x0)/σ_t is matched exactly when the
    network sees the same step as q_sample: a check of the step bookkeeping (float32 rounding only)."""
    batch = sr_batch()
    method = oracle_method(batch["hr"], sampler={"ot_ode": True})
    assert method.compute_losses(batch)["loss"] < 1e-10


def test_inpainting_loss_covers_only_the_missing_pixels():
    batch = inpainting_batch()
    method = I2SB(LearnableOutput(batch["hr"].shape))
    method.compute_losses(batch)["loss"].backward()
    gradient = method.net.output.grad.abs()
    observed = batch["mask"].expand_as(gradient).bool()
    assert gradient[observed].max() == 0 and (gradient[~observed] > 0).all()


# -------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("nfe", [1, 3, 10])
def test_ot_ode_sampling_with_a_perfect_predictor_returns_x0(nfe: int):
    """With x̂0 = x0 every OT-ODE posterior step stays on the bridge mean, which ends at step 0 at
    x0 + mu_x1[0] (x1 - x0) up to O(β_0) terms: the error is bounded by about mu_x1[0] |x1 - x0| (~7e-4)."""
    batch = sr_batch()
    method = oracle_method(batch["hr"], sampler={"steps": nfe, "ot_ode": True})
    x1, _ = method.degraded_endpoint(batch)
    bound = 2 * float(method.bridge.mu_x1[0]) * float((x1 - batch["hr"]).abs().max())
    torch.testing.assert_close(method.generate(batch), batch["hr"], atol=bound, rtol=0)


def test_stochastic_sampling_with_a_perfect_predictor_returns_x0_and_is_seeded():
    """The last step n -> 0 is noise-free: x = x0 + σ_0²/σ_n² (x_n - x0) (I²SB eq. 4 with x̂0 = x0), and
    x_n - x0 = mu_x1[n] (x1 - x0) + std_sb[n] z; |z| < 5 for all 1536 draws bounds the error."""
    batch = sr_batch()
    method = oracle_method(batch["hr"], sampler={"steps": 5, "seed": 3})
    first, second = method.generate(batch), method.generate(batch)
    assert torch.equal(first, second)
    n = method.bridge.sampling_steps(5)[1]
    std, x1 = method.bridge.std_fwd, method.degraded_endpoint(batch)[0]
    spread = float(method.bridge.mu_x1[n] * (x1 - batch["hr"]).abs().max() + 5 * method.bridge.std_sb[n])
    bound = float(std[0] ** 2 / std[n] ** 2) * spread
    torch.testing.assert_close(first, batch["hr"], atol=bound, rtol=0)


def test_inpainting_sampling_reimposes_the_observed_pixels():
    batch = inpainting_batch()
    method = oracle_method(batch["hr"], sampler={"steps": 4, "ot_ode": True}, bridge={"beta_max": 1.0})
    sample = method.generate(batch)
    observed = batch["mask"].expand_as(sample).bool()
    assert torch.equal(sample[observed], batch["lr"][observed])
    torch.testing.assert_close(sample[~observed], batch["hr"][~observed], atol=2e-3, rtol=0)


def test_cond_x1_feeds_x1_to_the_network():
    assert I2SB(TINY_UNET, cond_x1=True).net.cond_channels == 3
    assert I2SB({**TINY_UNET, "cond_channels": 3}).net.cond_channels == 0  # follows cond_x1
    batch = sr_batch()
    probe = I2SB(LearnableOutput(batch["hr"].shape))
    method = I2SB(PerfectPredictor(batch["hr"], probe.bridge.std_fwd, cond_channels=3), cond_x1=True)
    method.set_sampling_steps(2)
    method.generate(batch)
    x1, _ = method.degraded_endpoint(batch)
    assert len(method.net.conds) == 2 and all(torch.equal(cond, x1) for cond in method.net.conds)


def test_learn_sigma_outputs_are_dropped():
    method = I2SB({**TINY_UNET, "learn_sigma": True})
    x = torch.zeros(2, 3, 16, 16)
    assert method.network_output(x, torch.tensor([0, 999]), x).shape == x.shape


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": {"steps": "0"}}, "model.sampler.steps"),
        ({"sampler": {"steps": "ddim50"}}, "model.sampler.steps"),
        ({"sampler": {"steps": 1000}}, r"\[1, 999\]"),
        ({"sampler": {"stepz": 4}}, "model.sampler"),
        ({"bridge": {"beta_max": 1e-9}}, "model.bridge"),
        ({"x1_upsample": "lanczos"}, "model.x1_upsample"),
    ],
)
def test_bad_config_names_the_key(kwargs: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        I2SB(TINY_UNET, **kwargs)


def test_nfe_accepts_strings_as_the_smoke_config_gives_them():
    method = I2SB(TINY_UNET, sampler={"steps": "2"})
    assert method.sampler["steps"] == 2


# --------------------------------------------------------------------------------- init_from
def test_init_from_a_state_dict_or_a_lightning_checkpoint(tmp_path):
    source = I2SB(TINY_UNET).net
    for parameter in source.parameters():
        nn.init.normal_(parameter)
    torch.save(source.state_dict(), tmp_path / "plain.pt")
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "lit.ckpt")
    for name in ("plain.pt", "lit.ckpt"):
        target = I2SB(TINY_UNET).net
        load_net_weights(target, tmp_path / name)
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), key


def test_init_from_a_different_network_lists_the_mismatches(tmp_path):
    torch.save(I2SB(TINY_UNET).net.state_dict(), tmp_path / "small.pt")
    wider = I2SB({**TINY_UNET, "model_channels": 16}, cond_x1=True).net
    with pytest.raises(ConfigError, match=r"shape of input_blocks\.0\.0\.weight: checkpoint \(8, 3, 3, 3\)"):
        load_net_weights(wider, tmp_path / "small.pt")
    with pytest.raises(ConfigError, match="is not a file"):
        load_net_weights(wider, tmp_path / "missing.pt")
