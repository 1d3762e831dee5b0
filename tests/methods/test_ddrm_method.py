"""DDRMRestoration: the method around `ddrm_sample`. Priors here are the exact denoisers of a Gaussian
x_0 ~ N(0, 0.4²) per pixel (GaussianOracle) inside a ClassConditionalDiffusion, so every parametrisation
and variance type of a framework prior can be checked against the others without training."""

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image

from lit_diffsr.callbacks import SampleGrid
from lit_diffsr.diffusion import GaussianOracle
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods import ClassConditionalDiffusion
from lit_diffsr.methods.ddrm import OPERATORS, DDRMRestoration

SIZE, CHANNELS = 8, 3
ORACLE = GaussianOracle(torch.zeros(CHANNELS, SIZE, SIZE), torch.full((CHANNELS, SIZE, SIZE), 0.4))


class OracleNet(torch.nn.Module):
    """Stand-in for the UNet: the exact ε / x_0 / v of the Gaussian data; records the labels it gets.
    With `learned_variance` it appends variance channels (garbage: DDRM must drop them)."""

    def __init__(self, channels: int = CHANNELS, num_classes: int | None = None,
                 learned_variance: bool = False, cond_channels: int = 0):
        super().__init__()
        self.image_size, self.in_channels, self.num_classes = SIZE, channels, num_classes
        self.cond_channels, self.learned_variance = cond_channels, learned_variance
        self.predict = None  # set by oracle_prior once the prior's ᾱ table exists
        self.labels_seen: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.labels_seen.append(y)
        output = self.predict(x, t)
        return torch.cat([output, torch.full_like(output, 1e3)], 1) if self.learned_variance else output


TINY_UNET = {"_target_": "lit_diffsr.nets.UNet", "image_size": SIZE, "model_channels": 8, "channel_mult": [1],
             "num_res_blocks": 1, "attention_resolutions": [], "num_heads": 1, "norm_groups": 4}


def oracle_prior(prediction: str = "eps", variance: str = "fixed_small",
                 **net_options) -> ClassConditionalDiffusion:
    """A ClassConditionalDiffusion (built with a tiny UNet) whose net is then swapped for the oracle."""
    net = OracleNet(learned_variance=variance == "learned_range", **net_options)
    diffusion = {"schedule": "cosine", "num_timesteps": 1000, "prediction": prediction, "variance": variance,
                 "loss": "hybrid" if variance == "learned_range" else "mse"}
    prior = ClassConditionalDiffusion(TINY_UNET, diffusion=diffusion, num_classes=net.num_classes)
    prior.net = net
    oracle = ORACLE if net.in_channels == CHANNELS else GaussianOracle(torch.zeros(1, SIZE, SIZE),
                                                                       torch.full((1, SIZE, SIZE), 0.4))
    net.predict = oracle.model_fn(prior.diffusion.process.alphas_cumprod, prediction)
    return prior


def ddrm(operator: dict, prior: ClassConditionalDiffusion | None = None, **options) -> DDRMRestoration:
    options.setdefault("sampler", {"steps": 10})
    return DDRMRestoration(operator=operator, prior=prior or oracle_prior(), **options)


def images(count: int = 2, seed: int = 0) -> torch.Tensor:
    """Draws of the prior's Gaussian, kept inside [-1, 1] as images are."""
    return ORACLE.sample(count, torch.Generator().manual_seed(seed)).float().clamp(-0.95, 0.95)


def two_masks() -> torch.Tensor:
    """(2, 1, H, W) masks, 1 = observed, different for each image (DDRM groups images by mask)."""
    pixels = torch.arange(SIZE * SIZE).reshape(1, SIZE, SIZE)
    return torch.stack([(pixels % 3 > 0), (pixels % 4 > 0)]).float()


SMALL_OPERATORS = {  # every type, with kernels that fit the 8-pixel images
    "denoise": {"type": "denoise"},
    "sr_average": {"type": "sr_average", "scale": 2},
    "sr_bicubic": {"type": "sr_bicubic", "scale": 2},
    "deblur_gaussian": {"type": "deblur_gaussian", "std": 1.0, "size": 5},
    "deblur_uniform": {"type": "deblur_uniform", "size": 3, "singular_threshold": 3e-2},
    "deblur_anisotropic": {"type": "deblur_anisotropic", "std_rows": 0.5, "std_cols": 1.5, "size": 5},
    "colorize": {"type": "colorize"},
    "inpaint": {"type": "inpaint"},
}


def test_every_operator_type_is_covered():
    assert set(SMALL_OPERATORS) == set(OPERATORS)


@pytest.mark.parametrize("name", SMALL_OPERATORS)
def test_noiseless_restoration_reproduces_the_measurements(name):
    # σ_y = 0, η_b = 1: the observed spectral components end at ȳ exactly (Kawar et al. 2022, eq. 8), so
    # H x̂ = y = H x whatever the prior says about the null space. 1e-4: float32 rounding through V, V^T on
    # O(1) values, amplified by 1/s_min ~ 1e2 for the thresholded / small blurs.
    method = ddrm(SMALL_OPERATORS[name], sigma_y=0.0, sampler={"steps": 10, "eta_b": 1.0})
    batch = {"hr": images(), "mask": two_masks()}
    restored = method.restore(batch, seed=0).restored
    groups = list(method.operators(batch))
    assert len(groups) == (2 if name == "inpaint" else 1)
    for index, operator in groups:
        torch.testing.assert_close(operator.H(restored[index]), operator.H(batch["hr"][index]),
                                   atol=1e-4, rtol=1e-4)
        # Only a null space (s_i = 0 or fewer measurements than pixels) leaves room for the prior.
        has_null_space = (operator.measurement_dim < operator.input_dim
                          or bool((operator.singulars() == 0).any()))
        assert torch.allclose(restored[index], batch["hr"][index], atol=1e-3) != has_null_space


@pytest.mark.parametrize(("prediction", "variance"), [("x0", "fixed_small"), ("v", "fixed_large"),
                                                      ("eps", "learned_range")])
def test_every_prior_parametrisation_gives_the_same_restoration(prediction, variance):
    # The exact x_0, v and ε predictors describe one denoiser: converted to ε (and the variance channels of a
    # learned-range net dropped) they must restore identically with the same seed. 1e-4: float32 rounding
    # of the conversions (ε from x_0 divides by √(1/ᾱ - 1) ≈ 6e-3 at the last step).
    operator = {"type": "sr_average", "scale": 2}
    reference = ddrm(operator).restore({"hr": images()}, seed=3).restored
    other = ddrm(operator, oracle_prior(prediction, variance)).restore({"hr": images()}, seed=3).restored
    torch.testing.assert_close(other, reference, atol=1e-4, rtol=1e-4)


def test_measurement_noise_has_std_sigma_y_and_follows_the_seed():
    # H = I, so the pseudo-inverse is y itself and y - x = σ_y z. 8·192 values estimate the std to ±1.8 %
    # (1/√(2n)); 8 % is over 4 standard errors.
    method = ddrm({"type": "denoise"}, sigma_y=0.1, sampler={"steps": 2})
    batch = {"hr": images(8)}
    first = method.restore(batch, seed=5)
    noise = first.pseudo_inverse - batch["hr"]
    assert abs(noise.std().item() / 0.1 - 1) < 0.08 and abs(noise.mean().item()) < 0.01
    again = method.restore(batch, seed=5)
    torch.testing.assert_close(again.restored, first.restored, atol=0, rtol=0)
    assert not torch.allclose(method.restore(batch, seed=6).pseudo_inverse, first.pseudo_inverse)


def test_class_labels_reach_a_class_conditional_prior():
    prior = oracle_prior(num_classes=5)
    batch = {"hr": images(), "y": torch.tensor([1, 3])}
    ddrm({"type": "denoise"}, prior, sampler={"steps": 2}).restore(batch, seed=0)
    assert all(labels.tolist() == [1, 3] for labels in prior.net.labels_seen)
    prior.net.labels_seen.clear()
    ddrm({"type": "denoise"}, prior, sampler={"steps": 2}, use_class_labels=False).restore(batch, seed=0)
    assert all(labels.tolist() == [5, 5] for labels in prior.net.labels_seen)  # the null class
    with pytest.raises(ConfigError, match="use_class_labels=false"):
        ddrm({"type": "denoise"}, prior).restore({"hr": images(), "y": torch.tensor([0, 7])}, seed=0)
    unconditional = oracle_prior()
    ddrm({"type": "denoise"}, unconditional, sampler={"steps": 2}).restore(batch, seed=0)
    assert unconditional.net.labels_seen and all(labels is None for labels in unconditional.net.labels_seen)


@pytest.mark.parametrize(("options", "message"), [
    ({"prior_ckpt": None}, "model.prior_ckpt is not set"),
    ({"prior_ckpt": "/no/such/prior.ckpt"}, r"model.prior_ckpt=/no/such/prior.ckpt: no such file"),
    ({"prior": L.LightningModule}, "not a Gaussian-diffusion prior"),
    ({"prior": lambda: oracle_prior(cond_channels=3)}, "conditioned on an image"),
    ({"net": {"model_channels": 8}}, "takes no model.net"),
    ({"operator": {"type": "sr"}}, "model.operator.type='sr'"),
    ({"operator": {"type": "sr_average", "scal": 2}}, r"unknown key\(s\) \['scal'\] in model.operator"),
    ({"operator": {"type": "sr_average", "scale": 3}}, "model.operator=.*divisor"),
    ({"operator": {"type": "colorize"}, "prior": lambda: oracle_prior(channels=1)}, "needs an RGB prior"),
    ({"sampler": {"steps": "ddim20"}}, "model.sampler.steps='ddim20'"),
    ({"sampler": {"step": 20}}, r"unknown key\(s\) \['step'\] in model.sampler"),
    ({"sigma_y": -1.0}, "model.sigma_y=-1.0"),
])
def test_bad_configuration_is_a_clear_error(options, message):
    # Priors are given as factories: built per test, not at collection.
    arguments = {"operator": {"type": "denoise"}, "prior": oracle_prior, **options}
    arguments["prior"] = None if "prior_ckpt" in options else arguments["prior"]()
    with pytest.raises(ConfigError, match=message):
        DDRMRestoration(**arguments)


def test_data_that_does_not_fit_the_prior_is_a_clear_error():
    with pytest.raises(ConfigError, match=f"set data.resolution={SIZE}"):
        ddrm({"type": "denoise"}).restore({"hr": torch.zeros(2, CHANNELS, 2 * SIZE, 2 * SIZE)}, seed=0)
    with pytest.raises(ConfigError, match="data.degradation"):
        ddrm({"type": "inpaint"}).restore({"hr": images()}, seed=0)
    with pytest.raises(ConfigError, match="training-free"):
        ddrm({"type": "denoise"}).setup("fit")


def save_prior(method: L.LightningModule, path: Path) -> None:
    """A checkpoint as `lit_diffsr fit` writes it (state_dict, hyper-parameters, the method's class)."""
    checkpoint = {"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams),
                  "pytorch-lightning_version": L.__version__}
    method.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


def test_prior_is_loaded_from_its_checkpoint(tmp_path):
    prior = ClassConditionalDiffusion({**TINY_UNET, "num_classes": 4, "learn_sigma": True}, num_classes=4)
    save_prior(prior, tmp_path / "prior.ckpt")
    method = DDRMRestoration(str(tmp_path / "prior.ckpt"), {"type": "sr_average", "scale": 2},
                             sampler={"steps": 3})
    for name, value in prior.net.state_dict().items():
        torch.testing.assert_close(method.net.state_dict()[name], value)
    restored = method.generate({"hr": images(), "y": torch.tensor([0, 3])})
    assert restored.shape == (2, CHANNELS, SIZE, SIZE) and restored.abs().max() <= 1
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ConfigError, match="model.prior_ckpt: .*not written by lit_diffsr"):
        DDRMRestoration(str(tmp_path / "foreign.ckpt"))


def test_validation_logs_both_psnrs_and_writes_degraded_restored_original_rows(tmp_path):
    method = ddrm({"type": "denoise"}, sigma_y=0.2, sampler={"steps": 4})
    batches = [{"hr": images(4, seed), "name": [f"image{seed}_{i}" for i in range(4)]} for seed in range(2)]
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[SampleGrid(str(tmp_path))])
    metrics = trainer.validate(method, dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))[0]
    assert set(metrics) == {"val/psnr", "val/psnr_pinv"}  # SSIM's 11-pixel window does not fit 8 pixels
    # H = I: the pseudo-inverse is y = x + σ_y z, PSNR = 20 log10(2 / σ_y) = 20 dB on [-1, 1] images;
    # clamping to [-1, 1] only helps. ±1 dB: 8 images of 192 values estimate the MSE to ~4 %.
    assert 19.0 < metrics["val/psnr_pinv"] < 21.0
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values())
    grid = Image.open(next(tmp_path.glob("val_step*.png")))
    # The 8 images of the 2 batches in one group of rows (degraded / restored / original), 8 px tiles
    # enlarged 8x to 64 px, padding 2.
    assert grid.size == (8 * (64 + 2) + 2, 3 * (64 + 2) + 2)


def test_predict_returns_restorations_and_names():
    method = ddrm({"type": "colorize"}, sampler={"steps": 2})
    output = method.predict_step({"hr": images(), "name": ["a", "b"]}, batch_idx=0)
    assert output["names"] == ["a", "b"] and output["samples"].shape == (2, CHANNELS, SIZE, SIZE)
    assert output["samples"].abs().max() <= 1
