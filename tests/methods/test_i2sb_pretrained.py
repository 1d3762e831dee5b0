"""I²SB from published weights: `model.init_from=` a converted ADM checkpoint (variance channels dropped,
x1's input channels zero for cond_x1), and NVlabs' own checkpoints (`convert i2sb`: EMA shadow
parameters, `diffusion_model.` prefix, time input N · linspace(1e-4, 1, N)[n]), on small synthetic files
in their format."""

import json
from pathlib import Path

import pytest
import torch

from lit_diffsr.convert import convert_adm, convert_i2sb
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods import I2SB, load_method
from lit_diffsr.nets.adm_import import resolve_flags, unet_config
from lit_diffsr.nets.loading import load_net_weights

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "adm"
FLAGS = json.loads((REFERENCE / "configs.json").read_text())["adm_uncond"]["flags"]


@pytest.fixture(scope="module")
def adm(tmp_path_factory):
    """The reference ADM network (learned sigma, 32 px) converted, and its lit_diffsr method."""
    out = convert_adm(REFERENCE / "adm_uncond.pt", tmp_path_factory.mktemp("adm") / "adm.ckpt", flags=FLAGS)
    return out, load_method(out).eval()


def adm_net_config() -> dict:
    return unet_config("guided", False, resolve_flags("guided", False, FLAGS))


def i2sb_net(cond_x1: bool) -> I2SB:
    return I2SB({**adm_net_config(), "learn_sigma": False}, cond_x1=cond_x1)


@pytest.mark.parametrize("cond_x1", [False, True])
def test_init_from_adm_drops_the_variance_channels_and_zero_widens_the_input(adm, cond_x1):
    path, source = adm
    method = i2sb_net(cond_x1)
    load_net_weights(method.net, path)
    weights, source_weights = method.net.state_dict(), source.net.state_dict()
    torch.testing.assert_close(weights["out.2.weight"], source_weights["out.2.weight"][:3])
    torch.testing.assert_close(weights["out.2.bias"], source_weights["out.2.bias"][:3])
    first = weights["input_blocks.0.0.weight"]
    assert first.shape[1] == (6 if cond_x1 else 3)
    torch.testing.assert_close(first[:, :3], source_weights["input_blocks.0.0.weight"])
    assert torch.count_nonzero(first[:, 3:]) == 0
    key = "middle_block.1.qkv.weight"
    torch.testing.assert_close(weights[key], source_weights[key])


def test_init_from_a_missing_converted_file_says_where_to_get_it(tmp_path):
    with pytest.raises(ConfigError, match="256x256_diffusion_uncond.pt and convert it: python -m lit_diffsr "
                                          "convert adm"):
        load_net_weights(i2sb_net(False).net, tmp_path / "256x256_diffusion_uncond.ckpt")


def nvlabs_checkpoint(official: dict[str, torch.Tensor], cond_x1: bool) -> dict:
    """A file as NVlabs' runner saves it: net / ema (torch_ema) / optimizer / sched; EMA = `official`."""
    official = {**official, "out.2.weight": official["out.2.weight"][:3],
                "out.2.bias": official["out.2.bias"][:3]}
    if cond_x1:
        weight = official["input_blocks.0.0.weight"]
        official["input_blocks.0.0.weight"] = torch.cat([weight, 0.01 * torch.randn_like(weight)], dim=1)
    raw = {f"diffusion_model.{key}": torch.randn_like(value) for key, value in official.items()}
    ema = {"decay": 0.9999, "num_updates": 7, "shadow_params": list(official.values()),
           "collected_params": None}
    return {"net": raw, "ema": ema, "optimizer": {"state": {}, "param_groups": []}, "sched": None}


@pytest.mark.parametrize("cond_x1", [False, True])
def test_nvlabs_checkpoint_samples_with_its_ema_weights_and_noise_level_time(adm, tmp_path, cond_x1):
    _, source = adm
    official = torch.load(REFERENCE / "adm_uncond.pt", weights_only=True)["state_dict"]
    torch.save(nvlabs_checkpoint(official, cond_x1), tmp_path / "latest.pt")
    out = convert_i2sb(tmp_path / "latest.pt", tmp_path / "i2sb.ckpt", cond_x1=cond_x1, flags=FLAGS)
    method = load_method(out).eval()
    assert isinstance(method, I2SB) and method.time_input == "noise_level" and method.cond_x1 == cond_x1

    x_t, x1 = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    step = torch.tensor([0, 617])
    noise_level = 1000 * torch.linspace(1e-4, 1.0, 1000)[step]  # I²SB: t = noise_levels[step]
    with torch.no_grad():
        output = method.network_output(x_t, step, x1)
        if cond_x1:  # the x1 channels are the checkpoint's, not the ADM source's: compare to the raw net
            expected = method.net(x_t, noise_level, cond=x1)
        else:
            expected = source.net(x_t, noise_level)[:, :3]
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    if not cond_x1:
        with torch.no_grad():
            # the time input matters
            assert not torch.allclose(source.net(x_t, step)[:, :3], output, atol=1e-3)

    # an i2sb_* experiment's method (step time input) takes the checkpoint's time input when it loads it
    experiment = I2SB(adm_net_config() | {"learn_sigma": False}, cond_x1=cond_x1)
    experiment.on_load_checkpoint(torch.load(out, weights_only=True))
    assert experiment.time_input == "noise_level"


def test_raw_weights_and_a_wrong_ema_are_handled(tmp_path):
    official = torch.load(REFERENCE / "adm_uncond.pt", weights_only=True)["state_dict"]
    checkpoint = nvlabs_checkpoint(official, cond_x1=False)
    torch.save(checkpoint, tmp_path / "latest.pt")
    raw = load_method(convert_i2sb(tmp_path / "latest.pt", tmp_path / "raw.ckpt", flags=FLAGS, use_ema=False))
    expected = checkpoint["net"]["diffusion_model.time_embed.0.weight"]
    torch.testing.assert_close(raw.net.state_dict()["time_embed.0.weight"], expected)
    checkpoint["ema"]["shadow_params"] = checkpoint["ema"]["shadow_params"][:-1]
    torch.save(checkpoint, tmp_path / "short_ema.pt")
    with pytest.raises(ConfigError, match="shadow parameters do not match"):
        convert_i2sb(tmp_path / "short_ema.pt", tmp_path / "x.ckpt", flags=FLAGS)


def test_an_experiment_predicts_from_a_converted_nvlabs_checkpoint(tmp_path):
    """`predict experiment=i2sb_* ckpt_path=<converted>`: Lightning loads the weights into the experiment's
    I2SB, which takes the checkpoint's time input; the samples are those of the converted method."""
    import lightning as L

    official = torch.load(REFERENCE / "adm_uncond.pt", weights_only=True)["state_dict"]
    torch.save(nvlabs_checkpoint(official, cond_x1=False), tmp_path / "latest.pt")
    out = convert_i2sb(tmp_path / "latest.pt", tmp_path / "i2sb.ckpt", flags=FLAGS)
    sampler = {"steps": 2, "seed": 3}
    net = adm_net_config() | {"learn_sigma": False}
    experiment = I2SB(net, sampler=sampler, x1_upsample="nearest")
    batch = {"lr": torch.rand(2, 3, 8, 8) * 2 - 1, "hr": torch.zeros(2, 3, 32, 32), "name": ["a", "b"]}
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False)
    batches = torch.utils.data.DataLoader([batch], batch_size=None)
    (predicted,) = trainer.predict(experiment, dataloaders=batches, ckpt_path=out)
    assert experiment.time_input == "noise_level"
    converted = load_method(out).eval()
    converted.sampler.update(sampler)
    with torch.no_grad():
        expected = converted.generate(batch)
    torch.testing.assert_close(predicted["samples"], expected)
