"""`convert adm`: the four reference networks of tests/fixtures/reference/adm (built with openai's
guided-diffusion, flags in configs.json) reproduce the official outputs once converted, through the
checkpoint that `load_method` reads; presets build; a file that runs code is refused."""

import json
import pickle
from pathlib import Path

import pytest
import torch

from lit_diffsr.convert import convert_adm, main
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods import CascadeStage, ClassConditionalDiffusion, load_method
from lit_diffsr.nets import UNet
from lit_diffsr.nets.adm_import import PRESETS, resolve_flags, unet_config

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "adm"
CONFIGS = json.loads((REFERENCE / "configs.json").read_text())


def converted(name: str, tmp_path: Path):
    config = CONFIGS[name]
    out = convert_adm(REFERENCE / f"{name}.pt", tmp_path / f"{name}.ckpt", source="guided",
                      super_res=config["builder"] == "sr_create_model", flags=config["flags"])
    return load_method(out).eval(), torch.load(REFERENCE / f"{name}.pt", weights_only=True)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_converted_reference_network_reproduces_the_official_output(name, tmp_path):
    method, reference = converted(name, tmp_path)
    inputs = reference["inputs"]
    cond = None
    if "low_res" in inputs:  # SuperResModel: the stage upsamples bilinearly, as the model did inside
        assert isinstance(method, CascadeStage) and method.cond_upsample == "bilinear"
        cond = method.condition(inputs["low_res"])
    else:
        assert isinstance(method, ClassConditionalDiffusion)
    with torch.no_grad():
        output = method.net(inputs["x"], inputs["t"], y=inputs.get("y"), cond=cond)
    expected = reference["output"]
    assert output.shape == expected.shape == tuple(CONFIGS[name]["output_shape"])
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # one more parameter row than the official count: the null class of a class-conditional net
    extra = method.net.label_embed.weight.shape[1] if method.net.num_classes else 0
    assert sum(p.numel() for p in method.net.parameters()) == CONFIGS[name]["params"] + extra


def test_the_legacy_attention_order_matters(tmp_path):
    """iddpm_uncond is legacy-ordered: read as the new order, the output moves far off."""
    config = CONFIGS["iddpm_uncond"]
    with pytest.raises(AssertionError):
        wrong = convert_adm(REFERENCE / "iddpm_uncond.pt", tmp_path / "wrong.ckpt",
                            flags={**config["flags"], "use_new_attention_order": True})
        reference = torch.load(REFERENCE / "iddpm_uncond.pt", weights_only=True)
        with torch.no_grad():
            output = load_method(wrong).net(reference["inputs"]["x"], reference["inputs"]["t"])
        torch.testing.assert_close(output, reference["output"], rtol=1e-3, atol=1e-3)


def test_diffusion_settings_come_with_the_preset(tmp_path):
    method, _ = converted("adm_uncond", tmp_path)
    config = method.diffusion.config
    settings = (config["schedule"], config["num_timesteps"], config["variance"])
    assert settings == ("linear", 1000, "learned_range")
    assert method.diffusion.sampler["name"] == "ancestral"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_its_network(name):
    preset = PRESETS[name]
    config = unet_config(preset.source, preset.super_res, resolve_flags(preset.source, preset.super_res,
                                                                          preset.flags))
    config.pop("_target_")
    with torch.device("meta"):
        net = UNet(**config)
    assert net.out.__getitem__(2).out_channels == 6  # every release learns sigma
    assert (net.num_classes == 1000) == preset.flags.get("class_cond", False)
    if name == "512x512_diffusion":  # half-width first level, as guided-diffusion's channel_mult 0.5
        assert net.input_blocks[0][0].out_channels == 128
    if name.startswith(("imagenet64_uncond", "cifar10")):  # improved-diffusion's rescale_timesteps
        assert net.timestep_scale == 0.25
    if name == "256x256_diffusion_uncond":  # the released network's size (the DDRM / I²SB prior)
        assert sum(p.numel() for p in net.parameters()) == 552_814_086


def test_flags_that_do_not_fit_the_file_are_listed(tmp_path):
    flags = {**CONFIGS["adm_uncond"]["flags"], "num_res_blocks": 3}
    with pytest.raises(ConfigError, match="(?s)does not fit the network .*missing: input_blocks"):
        convert_adm(REFERENCE / "adm_uncond.pt", tmp_path / "x.ckpt", flags=flags)
    with pytest.raises(ConfigError, match="unknown guided-diffusion flag"):
        convert_adm(REFERENCE / "adm_uncond.pt", tmp_path / "x.ckpt", flags={"num_chanels": 3})
    with pytest.raises(ConfigError, match="no valid network: .*attention_resolutions \\[7\\] never occur"):
        convert_adm(REFERENCE / "adm_uncond.pt", tmp_path / "x.ckpt",
                    flags={**CONFIGS["adm_uncond"]["flags"], "attention_resolutions": "7"})
    with pytest.raises(ConfigError, match="flag image_size='3x2' must be a int"):
        convert_adm(REFERENCE / "adm_uncond.pt", tmp_path / "x.ckpt", flags={"image_size": "3x2"})


class Payload:
    """Unpickling calls open(marker, "w"): the file appears if the loader runs code from the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_file_that_runs_code_is_refused_in_one_line(tmp_path, capsys):
    control, marker = tmp_path / "control.pt", tmp_path / "control_marker"
    torch.save({"state_dict": Payload(marker)}, control)
    torch.load(control, weights_only=False)  # the payload works when loaded unsafely ...
    assert marker.exists()
    def pickle_dump(obj, path):
        with open(path, "wb") as file:
            pickle.dump(obj, file)

    for name, save in (("payload.pt", torch.save), ("payload.pkl", pickle_dump)):
        payload, marker = tmp_path / name, tmp_path / f"{name}_marker"
        save({"input_blocks.0.0.weight": Payload(marker)}, payload)
        with pytest.raises(SystemExit) as exit_info:
            main(["adm", str(payload), str(tmp_path / "out.ckpt"), "--preset", "256x256_diffusion_uncond"])
        assert exit_info.value.code == 2
        error = capsys.readouterr().err
        assert error.startswith("error: convert adm:") and "weights_only" in error
        assert len(error.strip().splitlines()) == 1
        assert not marker.exists()  # ... and is never run by the converter
        assert not (tmp_path / "out.ckpt").exists()


def test_a_converted_upsampler_is_a_cascade_stage(tmp_path):
    from lit_diffsr.pipelines.cascade import build_stages

    config = CONFIGS["adm_upsampler"]
    path = convert_adm(REFERENCE / "adm_upsampler.pt", tmp_path / "up.ckpt", super_res=True,
                       flags=config["flags"])
    (stage,) = build_stages({"sr": {"checkpoint": str(path), "steps": "2"}})
    assert stage.method.scale == 4
    lr, labels = torch.rand(2, 3, 8, 8) * 2 - 1, torch.tensor([3, 999])
    samples = stage.method.sample({"lr": lr, "y": labels}, seed=0).images
    assert samples.shape == (2, 3, 32, 32) and torch.isfinite(samples).all()


def test_help_lists_every_preset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert all(f"  {name} " in shown for name in PRESETS)
