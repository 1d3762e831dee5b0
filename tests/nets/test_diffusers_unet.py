"""diffusers UNet2DModel folders <-> lit_diffsr UNet: small models built with the diffusers package, saved
with save_pretrained (safetensors), read without diffusers, and back; outputs agree to float32 precision."""

import json

import pytest
import torch
from diffusers import UNet2DModel

from lit_diffsr.errors import ConfigError
from lit_diffsr.nets import UNet
from lit_diffsr.nets.diffusers_unet import read_unet_folder, write_unet_folder

DIFFUSERS_MODELS = {
    # ADM-like: AdaGN, residual resampling, 8-channel heads, classes
    "adm_like": {"sample_size": 16, "block_out_channels": (16, 32, 32), "layers_per_block": 2,
                 "down_block_types": ("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                 "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
                 "resnet_time_scale_shift": "scale_shift", "downsample_type": "resnet",
                 "upsample_type": "resnet", "attention_head_dim": 8, "attn_norm_num_groups": 8,
                 "norm_num_groups": 8, "num_class_embeds": 5, "out_channels": 6},
    # DDPM-like (google/ddpm-*): additive time embedding, conv resampling, one head per block
    "ddpm_like": {"sample_size": 16, "block_out_channels": (16, 32), "layers_per_block": 1,
                  "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
                  "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "attention_head_dim": None,
                  "norm_num_groups": 8},
}


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """No zero-initialised layer, so every weight reaches the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name", sorted(DIFFUSERS_MODELS))
def test_a_diffusers_folder_reads_into_the_unet(name, tmp_path):
    torch.manual_seed(0)
    theirs = perturbed(UNet2DModel(**DIFFUSERS_MODELS[name]))
    theirs.save_pretrained(tmp_path, safe_serialization=True)
    config, state = read_unet_folder(tmp_path)
    config.pop("_target_")
    ours = UNet(**config).eval()
    ours.load_state_dict(state)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 871])
    labels = torch.tensor([1, 4]) if config["num_classes"] else None
    with torch.no_grad():
        expected = theirs(x, t, class_labels=labels).sample
        output = ours(x, t, y=labels)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def tiny_unet(**options) -> UNet:
    torch.manual_seed(1)
    config = {"image_size": 16, "model_channels": 16, "channel_mult": (1, 2, 2), "num_res_blocks": 2,
              "attention_resolutions": (8, 4), "num_head_channels": 8, "norm_groups": 8, **options}
    return perturbed(UNet(**config), seed=1)


@pytest.mark.parametrize("options", [
    {"use_scale_shift_norm": True, "resblock_updown": True, "learn_sigma": True, "num_classes": 4},
    {"use_scale_shift_norm": False, "resblock_updown": False},
    {"num_head_channels": -1, "num_heads": 2, "attention_resolutions": (4,)},  # one attended width
])
def test_a_unet_exports_to_a_diffusers_folder(options, tmp_path):
    ours = tiny_unet(**options)
    write_unet_folder(ours, tmp_path)
    theirs = UNet2DModel.from_pretrained(tmp_path).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([0, 640])
    labels = torch.tensor([0, 3]) if ours.num_classes else None
    with torch.no_grad():
        expected = ours(x, t, y=labels)
        output = theirs(x, t, class_labels=labels).sample
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    # and back: the same network, null class included
    config, state = read_unet_folder(tmp_path)
    assert config["num_classes"] == ours.num_classes
    config.pop("_target_")
    again = UNet(**config)
    again.load_state_dict(state)
    for key, value in ours.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value)


def test_what_cannot_map_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="heads of different widths"):
        write_unet_folder(tiny_unet(num_head_channels=-1, num_heads=2, attention_resolutions=(16, 8)),
                          tmp_path / "heads")
    with pytest.raises(ConfigError, match="cond_channels"):
        write_unet_folder(tiny_unet(cond_channels=3), tmp_path / "cond")
    torch.manual_seed(0)
    fourier = UNet2DModel(**{**DIFFUSERS_MODELS["ddpm_like"], "time_embedding_type": "fourier"})
    fourier.save_pretrained(tmp_path / "f")
    with pytest.raises(ConfigError, match="time_embedding_type='fourier'"):
        read_unet_folder(tmp_path / "f")
    config = json.loads((tmp_path / "f" / "config.json").read_text())
    (tmp_path / "f" / "config.json").write_text(json.dumps({**config, "_class_name": "os.system"}))
    with pytest.raises(ConfigError, match="only UNet2DModel folders are read"):
        read_unet_folder(tmp_path / "f")
