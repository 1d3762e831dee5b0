"""The class-conditional base method: losses, guidance wiring, predict batches, checkpoint round trip."""

import numpy as np
import pytest
import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods import ClassConditionalDiffusion, load_method
from lit_diffsr.methods.sampling import Diffusion

NET = {
    "_target_": "lit_diffsr.nets.UNet",
    "image_size": 8,
    "model_channels": 8,
    "channel_mult": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [4],
    "num_heads": 1,
    "norm_groups": 4,
    "num_classes": 3,
    "learn_sigma": True,
}


def make_method(**kwargs) -> ClassConditionalDiffusion:
    """A tiny method whose zero-initialised layers are perturbed, so outputs depend on every input."""
    options = {"net": NET, "num_classes": 3, "diffusion": {"num_timesteps": 50}, "sampler": {"steps": "5"}}
    method = ClassConditionalDiffusion(**{**options, **kwargs})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in method.net.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return method


def batch(n: int = 4) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {"hr": torch.rand(n, 3, 8, 8, generator=generator) * 2 - 1, "y": torch.arange(n) % 3}


def test_losses_are_finite_scalars_and_backpropagate():
    method = make_method()
    losses = method.compute_losses(batch())
    assert set(losses) >= {"loss", "mse", "vb"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.net.parameters())


def test_generate_shape_range_and_seed_reproducibility():
    method = make_method()
    b = {**batch(2), "seed": 7}
    first, second = method.generate(b), method.generate(b)
    assert first.shape == (2, 3, 8, 8)
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, second)
    assert not torch.equal(first, method.generate({**b, "seed": 8}))


def test_guidance_scale_changes_samples():
    method = make_method(guidance_scale=1.0)
    b = {**batch(2), "seed": 3}
    plain = method.generate(b)
    method.guidance_scale = 3.0
    guided = method.generate(b)
    assert (plain - guided).abs().max() > 1e-3


def test_predict_dataloader_labels_names_and_batches():
    method = make_method(predict={"num_samples": 5, "batch_size": 2, "labels": [2], "seed": 1})
    batches = list(method.predict_dataloader())
    assert [len(b["y"]) for b in batches] == [2, 2, 1]
    assert all(int(label) == 2 for b in batches for label in b["y"])
    names = [name for b in batches for name in b["name"]]
    assert len(set(names)) == 5 and names[0] == "sample00000_class2"


def test_unknown_diffusion_key_names_the_config_key():
    with pytest.raises(ConfigError, match="model.diffusion"):
        Diffusion({"num_timestep": 10}, {})


def test_warmup_schedule_is_linear_then_flat():
    method = make_method(optim={"lr": 1.0, "warmup_steps": 3})
    scheduler = method.configure_optimizers()["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(6):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_rng_state_round_trip_through_checkpoint_hooks():
    method = make_method()
    torch.manual_seed(5)
    np.random.seed(5)
    checkpoint: dict = {}
    method.on_save_checkpoint(checkpoint)
    expected = (torch.rand(3), np.random.rand(3))

    class FitTrainer:  # the hooks restore RNG only when fitting
        class state:
            fn = "fit"

    method._trainer = FitTrainer()
    torch.manual_seed(99)
    np.random.seed(99)
    method.on_load_checkpoint(checkpoint)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


def test_load_method_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        load_method(tmp_path / "missing.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="not written by lit_diffsr"):
        load_method(foreign)


@pytest.mark.parametrize(
    "sampler", [{"name": "dpm_solver_pp", "steps": "quad6"}, {"name": "ancestral", "steps": "5"}]
)
def test_every_configured_sampler_generates(sampler):
    method = make_method(sampler=sampler)
    assert method.diffusion.sampling_process.num_timesteps == int(sampler["steps"].removeprefix("quad"))
    samples = method.generate({**batch(2), "seed": 1})
    assert samples.shape == (2, 3, 8, 8) and torch.isfinite(samples).all()


def test_unknown_sampler_names_the_config_key():
    with pytest.raises(ConfigError, match="model.sampler.name"):
        Diffusion({}, {"name": "heun"})


def test_validation_noise_is_its_own_and_leaves_the_training_stream_alone():
    method = make_method(sampler={"name": "ancestral", "steps": "5"})
    torch.manual_seed(123)
    training_draw = torch.rand(3)  # what the next training step would draw with no validation in between
    torch.manual_seed(123)
    validations = []
    for _ in range(2):
        method.on_validation_epoch_start()
        validations.append((method.compute_losses(batch())["loss"], method.generate(batch())))
        method.on_validation_epoch_end()
    assert torch.equal(torch.rand(3), training_draw)
    # the same noise at every validation: losses and grids compare across steps
    (first_loss, first_samples), (second_loss, second_samples) = validations
    assert torch.equal(first_loss, second_loss) and torch.equal(first_samples, second_samples)
