"""Cascade sampling: truncated / non-truncated hand-overs against q(z_s | z_0) with an exact Gaussian base
model, and chaining of tiny real models."""

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import GaussianOracle
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import SampleOutput
from lit_diffsr.methods.classcond import ClassConditionalDiffusion
from lit_diffsr.methods.super_resolution import SR3, CascadeStage
from lit_diffsr.pipelines import StageOptions, build_stages, sample_cascade, truncation_step
from tests.tiny_nets import TINY_UNET

TINY = {**TINY_UNET, "image_size": 8, "attention_resolutions": []}
FIXED = {"variance": "fixed_small", "loss": "mse"}
NOISE = {"schedule": "cosine", "num_timesteps": 1000}
ORACLE = GaussianOracle(torch.tensor([[[0.3, -0.3], [0.1, 0.0]]]), torch.full((1, 2, 2), 0.2))
COUNT = 20_000


class OracleNet(torch.nn.Module):
    """The exact eps-predictor of Gaussian data, in place of a trained base network (1 x 2 x 2 images)."""

    def __init__(self, alphas_cumprod: np.ndarray):
        super().__init__()
        self.predict = ORACLE.model_fn(torch.from_numpy(alphas_cumprod))
        self.in_channels, self.image_size = 1, 2

    def forward(self, x, t, y=None):
        return self.predict(x.double(), t).to(x.dtype)


def oracle_base() -> ClassConditionalDiffusion:
    # Deterministic DDIM with 100 steps follows the probability flow closely (errors ~1e-3 measured).
    sampler = {"name": "ddim", "steps": "ddim100", "clip_denoised": False}
    base = ClassConditionalDiffusion(
        {**TINY, "in_channels": 1, "out_channels": 1}, {**NOISE, **FIXED}, sampler
    )
    base.net = OracleNet(base.diffusion.process.alphas_cumprod)
    return base


def spy_stage(level: int, handover: str) -> tuple[StageOptions, dict]:
    """A 2 -> 4 stage that records what it is handed instead of sampling."""
    net = {**TINY, "in_channels": 1, "out_channels": 1, "cond_channels": 1, "use_aug_level": True}
    stage = CascadeStage(net, FIXED, scale_factor=2, augmentation={"noise": NOISE})
    received = {}

    def record(condition, *, seed=None, steps=None, stop_step=None, options=None):
        received.update(lr=condition["lr"], aug_level=options["aug_level"])
        return SampleOutput(torch.zeros(len(condition["lr"]), 1, 4, 4))

    stage.sample = record
    return StageOptions("sr", stage, aug_level=level, handover=handover), received


def q_marginal(level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of z_s = sqrt(abar) x_0 + sqrt(1 - abar) eps, x_0 Gaussian (level s = step s - 1)."""
    abar = float(oracle_base().diffusion.process.alphas_cumprod[level - 1])
    return abar**0.5 * ORACLE.mean, ORACLE.marginal_variance(abar)


def assert_gaussian(samples: torch.Tensor, mean: torch.Tensor, variance: torch.Tensor, bias: float) -> None:
    """Sample mean / variance within 5 standard errors plus the sampler's discretisation `bias`."""
    samples = samples.double()
    mean_tolerance = 5 * (variance / len(samples)).sqrt() + bias
    assert ((samples.mean(0) - mean).abs() <= mean_tolerance).all(), (samples.mean(0), mean)
    relative = (samples.var(0) / variance - 1).abs()
    assert (relative <= 5 * (2 / len(samples)) ** 0.5 + bias).all(), (samples.var(0), variance)


def test_truncated_handover_stops_the_base_chain_at_level_s():
    sr, received = spy_stage(501, "truncated")
    base = StageOptions("base", oracle_base())
    outputs = sample_cascade([base, sr], torch.zeros(COUNT, dtype=torch.long), batch_size=COUNT)
    assert received["aug_level"] == 501  # ddim100 keeps original step 500 = level 501
    torch.testing.assert_close(received["lr"], outputs[0])
    # The chain stopped at step 500 has the marginal of q(z_s | z_0) over the data; a chain run to z_0
    # (variance 0.04) or stopped elsewhere would not. 0.02: DDIM's discretisation error, measured < 0.005.
    mean, variance = q_marginal(501)
    assert_gaussian(received["lr"], mean, variance, bias=0.02)


def test_non_truncated_handover_renoises_the_finished_sample_with_q():
    sr, received = spy_stage(301, "non_truncated")
    base = StageOptions("base", oracle_base())
    outputs = sample_cascade([base, sr], torch.zeros(COUNT, dtype=torch.long), batch_size=COUNT)
    z0, z_s = outputs[0].double(), received["lr"].double()
    assert received["aug_level"] == 301
    assert_gaussian(z0, ORACLE.mean, ORACLE.std**2, bias=0.02)  # the base ran to z_0
    abar = float(oracle_base().diffusion.process.alphas_cumprod[300])
    # q(z_s | z_0) = N(sqrt(abar) z_0, (1 - abar) I): the residual is exact Gaussian noise.
    residual = z_s - abar**0.5 * z0
    assert_gaussian(
        residual, torch.zeros(1, 2, 2, dtype=torch.float64), torch.full((1, 2, 2), 1 - abar), bias=0
    )
    mean, variance = q_marginal(301)
    assert_gaussian(z_s, mean, variance, bias=0.02)


def test_truncation_snaps_to_a_kept_step_and_needs_matching_schedules():
    base = oracle_base()
    sr, _ = spy_stage(503, "truncated")
    stop_step, level = truncation_step(base, sr)
    assert base.diffusion.sampling_process.timestep_map[stop_step] == 500 and level == 501
    net = {**TINY, "in_channels": 1, "out_channels": 1, "cond_channels": 1, "use_aug_level": True}
    other = CascadeStage(net, FIXED, scale_factor=2, augmentation={"noise": {"schedule": "linear"}})
    with pytest.raises(ConfigError, match="non_truncated"):
        truncation_step(base, StageOptions("sr", other, aug_level=100, handover="truncated"))


def tiny_cascade(level: int, handover: str) -> list[StageOptions]:
    torch.manual_seed(0)
    base = ClassConditionalDiffusion({**TINY, "num_classes": 3, "learn_sigma": True}, num_classes=3)
    stage_net = {**TINY, "num_classes": 3, "cond_channels": 3, "use_aug_level": True}
    stage = CascadeStage(
        stage_net, FIXED, {"steps": "ddim4"}, scale_factor=2, num_classes=3, augmentation={"noise": NOISE}
    )
    sr3 = SR3({**TINY, "cond_channels": 3}, sampler={"steps": "3"}, scale_factor=2)
    for method in (base, stage, sr3):
        torch.nn.init.normal_(method.net.out[-1].weight, std=0.05)  # non-trivial outputs
        method.eval()
    return [
        StageOptions("base", base, steps="ddim5"),
        StageOptions("sr16", stage, aug_level=level, handover=handover),
        StageOptions("sr32", sr3, sampler="ddim"),
    ]


@pytest.mark.parametrize(
    ("level", "handover"), [(0, "non_truncated"), (201, "truncated"), (51, "non_truncated")]
)
def test_tiny_models_chain_with_shapes_per_stage_and_reproducible_seeds(level, handover):
    stages = tiny_cascade(level, handover)
    labels = torch.tensor([0, 1, 2])
    outputs = sample_cascade(stages, labels, seed=3, batch_size=2)
    assert [tuple(o.shape) for o in outputs] == [(3, 3, 8, 8), (3, 3, 16, 16), (3, 3, 32, 32)]
    assert all(torch.isfinite(o).all() for o in outputs)
    again = sample_cascade(tiny_cascade(level, handover), labels, seed=3, batch_size=2)
    for first, second in zip(outputs, again, strict=True):
        torch.testing.assert_close(first, second, rtol=0, atol=0)
    different = sample_cascade(tiny_cascade(level, handover), labels, seed=4, batch_size=2)
    assert not torch.equal(outputs[-1], different[-1])


def test_pipeline_errors_name_the_stage_and_key():
    base, stage, sr3 = tiny_cascade(0, "non_truncated")
    with pytest.raises(ConfigError, match="stages.sr32.aug_level"):
        StageOptions("sr32", sr3.method, aug_level=10)
    with pytest.raises(ConfigError, match="stages.sr16.handover"):
        StageOptions("sr16", stage.method, handover="partial")
    with pytest.raises(ConfigError, match="stages.sr16 must be a base model"):
        sample_cascade([stage, sr3], torch.zeros(1, dtype=torch.long))
    with pytest.raises(ConfigError, match="stages.base.checkpoint"):
        build_stages({"base": {"steps": "ddim5"}})
    with pytest.raises(ConfigError, match="no checkpoint"):
        build_stages({"base": {"checkpoint": "/nowhere/last.ckpt"}})
