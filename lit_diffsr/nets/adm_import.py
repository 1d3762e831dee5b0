"""Published ADM-family weights in `lit_diffsr.nets.UNet`: openai guided-diffusion and improved-diffusion
UNets (Dhariwal & Nichol 2021; Nichol & Dhariwal 2021) and NVlabs' I²SB networks (Liu et al. 2023).

Only tensors are read from a file (`lit_diffsr.safe_load`, weights_only); the architecture comes from the
flags the authors published with each checkpoint (`PRESETS`) or from flags a user passes, never from the file.
The mapping is by key names and shapes, checked against the UNet the flags build:
- ResBlock ``in_layers.0 / in_layers.2 / emb_layers.1 / out_layers.0 / out_layers.3 / skip_connection`` ->
  ``in_norm.0 / in_conv / embed.1 / out_norm / out_layers.2 / skip``;
- attention ``qkv`` / ``proj_out`` are 1-D convolutions there (a trailing 1 is added to their kernels), and
  the legacy attention order (heads outermost: ``[head][q|k|v][channel]`` rows) is permuted to the
  ``[q|k|v][head][channel]`` rows this UNet splits (ADM's ``use_new_attention_order`` layout);
- ``label_emb`` gets one more row, zero, for the null class (ADM was not trained with one: classifier-free
  guidance is meaningless on these models).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.nets.unet import AttentionBlock

IMAGENET_CLASSES = 1000
GUIDED_URL = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
IMPROVED_URL = "https://openaipublic.blob.core.windows.net/diffusion/march-2021/"

# Defaults of `model_and_diffusion_defaults()` in each code base (the flags a README leaves out).
GUIDED_DEFAULTS: dict[str, Any] = {
    "image_size": 64, "num_channels": 128, "num_res_blocks": 2, "num_heads": 4, "num_heads_upsample": -1,
    "num_head_channels": -1, "attention_resolutions": "16,8", "channel_mult": "", "dropout": 0.0,
    "class_cond": False, "use_checkpoint": False, "use_scale_shift_norm": True, "resblock_updown": False,
    "use_fp16": False, "use_new_attention_order": False, "learn_sigma": False, "sigma_small": False,
    "diffusion_steps": 1000, "noise_schedule": "linear", "timestep_respacing": "", "use_kl": False,
    "predict_xstart": False, "rescale_timesteps": False, "rescale_learned_sigmas": False,
}
# improved-diffusion has no num_head_channels / resblock_updown / channel_mult / new attention order
# (they keep the values below) and rescales timesteps by default.
IMPROVED_DEFAULTS: dict[str, Any] = {
    **GUIDED_DEFAULTS, "rescale_timesteps": True, "rescale_learned_sigmas": True,
}
IMPROVED_FIXED = {"num_head_channels": -1, "resblock_updown": False, "channel_mult": "",
                  "use_new_attention_order": False}
SUPER_RES_DEFAULTS = {"large_size": 256, "small_size": 64}
SOURCES = ("guided", "improved")

# Default channel multipliers by resolution when `channel_mult` is empty (create_model / sr_create_model).
GUIDED_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4),
                       64: (1, 2, 3, 4)}
GUIDED_SR_CHANNEL_MULT = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4)}
IMPROVED_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


@dataclass(frozen=True)
class Preset:
    """A released checkpoint: its code base, whether it is a SuperResModel, its published flags, its URL."""

    source: str
    file: str
    flags: dict[str, Any] = field(default_factory=dict)
    super_res: bool = False

    @property
    def url(self) -> str:
        return (GUIDED_URL if self.source == "guided" else IMPROVED_URL) + self.file


_ADM_256 = {"attention_resolutions": "32,16,8", "diffusion_steps": 1000, "image_size": 256,
            "learn_sigma": True, "noise_schedule": "linear", "num_channels": 256, "num_head_channels": 64,
            "num_res_blocks": 2, "resblock_updown": True, "use_scale_shift_norm": True}
_LSUN = {**_ADM_256, "class_cond": False, "dropout": 0.1}
_IDDPM_64 = {"image_size": 64, "num_channels": 128, "num_res_blocks": 3, "learn_sigma": True,
             "diffusion_steps": 4000, "noise_schedule": "cosine"}
_IDDPM_CIFAR = {**_IDDPM_64, "image_size": 32, "dropout": 0.3}
_IDDPM_LSUN = {"image_size": 256, "num_channels": 128, "num_res_blocks": 2, "num_heads": 1,
               "learn_sigma": True, "use_scale_shift_norm": False, "attention_resolutions": "16",
               "diffusion_steps": 1000, "noise_schedule": "linear", "rescale_timesteps": False}

# The README flags of every released diffusion checkpoint (guided-diffusion and improved-diffusion).
PRESETS: dict[str, Preset] = {
    "64x64_diffusion": Preset("guided", "64x64_diffusion.pt", {
        "attention_resolutions": "32,16,8", "class_cond": True, "diffusion_steps": 1000, "dropout": 0.1,
        "image_size": 64, "learn_sigma": True, "noise_schedule": "cosine", "num_channels": 192,
        "num_head_channels": 64, "num_res_blocks": 3, "resblock_updown": True,
        "use_new_attention_order": True, "use_scale_shift_norm": True}),
    "128x128_diffusion": Preset("guided", "128x128_diffusion.pt", {
        "attention_resolutions": "32,16,8", "class_cond": True, "diffusion_steps": 1000, "image_size": 128,
        "learn_sigma": True, "noise_schedule": "linear", "num_channels": 256, "num_heads": 4,
        "num_res_blocks": 2, "resblock_updown": True, "use_scale_shift_norm": True}),
    "256x256_diffusion": Preset("guided", "256x256_diffusion.pt", {**_ADM_256, "class_cond": True}),
    "256x256_diffusion_uncond": Preset("guided", "256x256_diffusion_uncond.pt",
                                       {**_ADM_256, "class_cond": False}),
    "512x512_diffusion": Preset("guided", "512x512_diffusion.pt",
                                {**_ADM_256, "class_cond": True, "image_size": 512}),
    "64_256_upsampler": Preset("guided", "64_256_upsampler.pt", {
        "attention_resolutions": "32,16,8", "class_cond": True, "diffusion_steps": 1000, "large_size": 256,
        "small_size": 64, "learn_sigma": True, "noise_schedule": "linear", "num_channels": 192,
        "num_heads": 4, "num_res_blocks": 2, "resblock_updown": True, "use_scale_shift_norm": True},
        super_res=True),
    "128_512_upsampler": Preset("guided", "128_512_upsampler.pt", {
        "attention_resolutions": "32,16", "class_cond": True, "diffusion_steps": 1000, "large_size": 512,
        "small_size": 128, "learn_sigma": True, "noise_schedule": "linear", "num_channels": 192,
        "num_head_channels": 64, "num_res_blocks": 2, "resblock_updown": True,
        "use_scale_shift_norm": True}, super_res=True),
    "lsun_bedroom": Preset("guided", "lsun_bedroom.pt", _LSUN),
    "lsun_cat": Preset("guided", "lsun_cat.pt", _LSUN),
    "lsun_horse": Preset("guided", "lsun_horse.pt", _LSUN),
    "lsun_horse_nodropout": Preset("guided", "lsun_horse_nodropout.pt", {**_LSUN, "dropout": 0.0}),
    "imagenet64_uncond_100M_1500K": Preset("improved", "imagenet64_uncond_100M_1500K.pt", _IDDPM_64),
    "imagenet64_uncond_vlb_100M_1500K": Preset("improved", "imagenet64_uncond_vlb_100M_1500K.pt",
                                               {**_IDDPM_64, "use_kl": True}),
    "cifar10_uncond_50M_500K": Preset("improved", "cifar10_uncond_50M_500K.pt", _IDDPM_CIFAR),
    "cifar10_uncond_vlb_50M_500K": Preset("improved", "cifar10_uncond_vlb_50M_500K.pt",
                                          {**_IDDPM_CIFAR, "use_kl": True}),
    "imagenet64_cond_270M_250K": Preset("improved", "imagenet64_cond_270M_250K.pt", {
        **_IDDPM_64, "num_channels": 192, "class_cond": True, "rescale_timesteps": False}),
    "upsample_cond_500K": Preset("improved", "upsample_cond_500K.pt", {
        "num_channels": 192, "num_res_blocks": 2, "learn_sigma": True, "class_cond": True,
        "diffusion_steps": 4000, "noise_schedule": "linear", "rescale_timesteps": False}, super_res=True),
    "lsun_uncond_100M_1200K_bs128": Preset("improved", "lsun_uncond_100M_1200K_bs128.pt", _IDDPM_LSUN),
    "lsun_uncond_100M_2400K_bs64": Preset("improved", "lsun_uncond_100M_2400K_bs64.pt", _IDDPM_LSUN),
}


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"flag {name}={value!r} must be True or False")


def _int_list(name: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    try:
        return tuple(float(part) if "." in part else int(part) for part in str(value).split(",") if part)
    except ValueError:
        raise ConfigError(f"flag {name}={value!r} must be comma-separated numbers, e.g. 32,16,8") from None


def resolve_flags(source: str, super_res: bool, given: dict[str, Any]) -> dict[str, Any]:
    """The official defaults of `source` updated by `given` (strings as on the authors' command lines)."""
    if source not in SOURCES:
        raise ConfigError(f"source {source!r}; use one of {', '.join(SOURCES)}")
    defaults = dict(GUIDED_DEFAULTS if source == "guided" else IMPROVED_DEFAULTS)
    if super_res:
        defaults.update(SUPER_RES_DEFAULTS)
        del defaults["image_size"]
    unknown = set(given) - set(defaults)
    if unknown:
        raise ConfigError(f"unknown {source}-diffusion flag(s) {sorted(unknown)}; known: {sorted(defaults)}")
    if source == "improved":
        fixed = {k: v for k, v in given.items() if k in IMPROVED_FIXED and v != IMPROVED_FIXED[k]}
        if fixed:
            raise ConfigError(f"improved-diffusion has no flag(s) {sorted(fixed)}: use --source guided")
    flags = {**defaults, **given}
    for name, default in defaults.items():
        if isinstance(default, bool):
            flags[name] = _parse_bool(name, flags[name])
        elif isinstance(default, (int, float)):
            try:
                flags[name] = type(default)(flags[name])
            except (TypeError, ValueError):
                raise ConfigError(f"flag {name}={flags[name]!r} must be a {type(default).__name__}") from None
    return flags


def _channel_mult(source: str, super_res: bool, flags: dict[str, Any], size: int) -> tuple[float, ...]:
    if flags["channel_mult"]:
        return _int_list("channel_mult", flags["channel_mult"])
    table = IMPROVED_CHANNEL_MULT if source == "improved" else (
        GUIDED_SR_CHANNEL_MULT if super_res else GUIDED_CHANNEL_MULT)
    if size not in table:
        raise ConfigError(
            f"no default channel_mult for size {size} in {source}-diffusion: pass channel_mult=1,2,2,2"
        )
    return table[size]


def unet_config(source: str, super_res: bool, flags: dict[str, Any]) -> dict[str, Any]:
    """The `_target_` config of the lit_diffsr UNet with the architecture of ADM's `flags` (resolved)."""
    size = flags["large_size"] if super_res else flags["image_size"]
    mult = _channel_mult(source, super_res, flags, size)
    heads, heads_up = flags["num_heads"], flags["num_heads_upsample"]
    if flags["num_head_channels"] == -1 and heads_up not in (-1, heads):
        raise ConfigError(
            f"num_heads_upsample={heads_up} differs from num_heads={heads}: the lit_diffsr UNet uses one "
            "head count in encoder and decoder"
        )
    channels = flags["num_channels"]
    config = {
        "_target_": "lit_diffsr.nets.UNet",
        "image_size": size,
        "in_channels": 3,
        "out_channels": 3,
        "model_channels": channels,
        "channel_mult": list(mult),
        "num_res_blocks": flags["num_res_blocks"],
        "attention_resolutions": [int(r) for r in _int_list("attention_resolutions",
                                                            flags["attention_resolutions"])],
        "num_heads": heads,
        "num_head_channels": flags["num_head_channels"],
        "dropout": flags["dropout"],
        "use_scale_shift_norm": flags["use_scale_shift_norm"],
        "resblock_updown": flags["resblock_updown"],
        "num_classes": IMAGENET_CLASSES if flags["class_cond"] else None,
        "cond_channels": 3 if super_res else 0,
        "learn_sigma": flags["learn_sigma"],
    }
    if source == "guided" and int(channels * mult[0]) != channels:
        config["stem_channels"] = int(channels * mult[0])  # guided-diffusion's first conv width
    if flags["rescale_timesteps"]:
        config["timestep_scale"] = 1000.0 / flags["diffusion_steps"]  # improved DDPM's t * 1000 / T
    return config


def diffusion_config(flags: dict[str, Any]) -> dict[str, Any]:
    """`model.diffusion` of lit_diffsr for ADM's diffusion flags (schedule, T, what the net predicts)."""
    if flags["noise_schedule"] not in ("linear", "cosine"):
        raise ConfigError(f"noise_schedule={flags['noise_schedule']!r}; ADM has linear and cosine")
    if flags["learn_sigma"]:
        variance = "learned_range"  # Nichol & Dhariwal 2021, eq. 15
    else:  # improved-diffusion: FIXED_SMALL with sigma_small, else FIXED_LARGE
        variance = "fixed_small" if flags["sigma_small"] else "fixed_large"
    return {
        "schedule": flags["noise_schedule"],
        "num_timesteps": flags["diffusion_steps"],
        "prediction": "x0" if flags["predict_xstart"] else "eps",
        "variance": variance,
        # L_hybrid for learned sigmas (L_vlb, use_kl, only matters for fine-tuning), else L_simple.
        "loss": "hybrid" if flags["learn_sigma"] else "mse",
    }


# -- reading files ------------------------------------------------------------------------------------
def tensor_dict(value: Any, what: str) -> dict[str, torch.Tensor]:
    """`value` as a flat {name: tensor} dict, or a ConfigError naming `what`."""
    if not isinstance(value, dict) or not value or not all(
        isinstance(key, str) and torch.is_tensor(tensor) for key, tensor in value.items()
    ):
        raise ConfigError(f"{what} is not a state_dict (a flat dict of named tensors)")
    return value


def state_dict_problems(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and mismatched-shape keys of `state` against a module's `expected` state_dict."""
    problems = [f"missing: {key}" for key in expected if key not in state]
    problems += [f"unexpected: {key}" for key in state if key not in expected]
    problems += [
        f"shape of {key}: checkpoint {tuple(state[key].shape)} vs model {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    return problems


def check_fits(state: dict[str, torch.Tensor], net: torch.nn.Module, what: str, hint: str) -> None:
    """A ConfigError listing (up to 20) problems when `state` does not load into `net` exactly."""
    problems = state_dict_problems(state, net.state_dict())
    if problems:
        more = f"\n  ... {len(problems) - 20} more" if len(problems) > 20 else ""
        shown = "\n  ".join(problems[:20]) + more
        raise ConfigError(f"{what} does not fit the network ({len(problems)} problem(s)):\n  {shown}\n{hint}")


# -- key mapping --------------------------------------------------------------------------------------
RESBLOCK_RENAMES = (
    (".in_layers.0.", ".in_norm.0."),
    (".in_layers.2.", ".in_conv."),
    (".emb_layers.1.", ".embed.1."),
    (".out_layers.0.", ".out_norm."),
    (".out_layers.3.", ".out_layers.2."),
    (".skip_connection.", ".skip."),
)


def adm_to_unet_state(
    state: dict[str, torch.Tensor], net: torch.nn.Module, legacy_attention: bool, what: str
) -> dict[str, torch.Tensor]:
    """ADM key names and layouts -> those of `net` (a lit_diffsr UNet), checked against it (module doc)."""
    converted = {}
    for key, tensor in state.items():
        name = key
        for old, new in RESBLOCK_RENAMES:
            name = name.replace(old, new)
        if name == "label_emb.weight":  # + a zero row: the null class of the lit_diffsr UNet
            name, tensor = "label_embed.weight", torch.cat([tensor, tensor.new_zeros(1, tensor.shape[1])])
        converted[name] = tensor.float()
    for prefix, module in net.named_modules():
        if not isinstance(module, AttentionBlock):
            continue
        for suffix in ("qkv.weight", "qkv.bias", "proj_out.weight"):
            key = f"{prefix}.{suffix}"
            if key not in converted:
                continue
            tensor = converted[key]
            if suffix.endswith("weight") and tensor.ndim == 3:  # Conv1d kernel (out, in, 1) -> 2-D
                tensor = tensor[..., None]
            if suffix.startswith("qkv") and legacy_attention:
                # rows [head][q|k|v][channel] -> [q|k|v][head][channel]
                heads = module.num_heads
                rows = tensor.reshape(heads, 3, -1, *tensor.shape[1:]).transpose(0, 1)
                tensor = rows.reshape(tensor.shape)
            converted[key] = tensor
    hint = ("check the preset or flags (num_channels, channel_mult, num_res_blocks, attention_resolutions, "
            "class_cond, learn_sigma)")
    check_fits(converted, net, what, hint)
    return converted


def fit_i2sb_init(state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An ADM state_dict adapted as I²SB initialises from ADM (Liu et al. 2023, §4 and its code): the
    variance half of the output layer dropped when `net` does not learn sigma, and the first conv widened
    with zero weights for the channels of x1 a conditional (cond_x1) network also sees."""
    expected = net.state_dict()
    state = dict(state)
    for key in ("out.2.weight", "out.2.bias"):
        if key in state and key in expected and state[key].shape[0] == 2 * expected[key].shape[0]:
            state[key] = state[key][: expected[key].shape[0]]
    key = "input_blocks.0.0.weight"
    if key in state and key in expected:
        have, want = state[key].shape[1], expected[key].shape[1]
        if have < want and state[key].shape[0] == expected[key].shape[0]:
            extra = state[key].new_zeros(state[key].shape[0], want - have, *state[key].shape[2:])
            state[key] = torch.cat([state[key], extra], dim=1)
    return state


# -- NVlabs I²SB checkpoints --------------------------------------------------------------------------
I2SB_PREFIX = "diffusion_model."
# The ADM 256 uncond network I²SB trains, without the variance channels (I²SB's ckpt_util).
I2SB_FLAGS = {**_ADM_256, "class_cond": False, "learn_sigma": False}


def i2sb_release_state(checkpoint: Any, use_ema: bool, what: str) -> dict[str, torch.Tensor]:
    """ADM-named weights of an NVlabs I²SB checkpoint ``{"net": state_dict, "ema": torch_ema state}``.

    `net` holds ``diffusion_model.*`` keys; the EMA's ``shadow_params`` list the same parameters in the
    network's registration order (the UNet has no buffers), so they are matched by position and shape."""
    if not isinstance(checkpoint, dict) or "net" not in checkpoint:
        raise ConfigError(f"{what} is not an I²SB checkpoint: expected a dict with 'net' (and 'ema')")
    net_state = tensor_dict(checkpoint["net"], f"{what}['net']")
    if not all(key.startswith(I2SB_PREFIX) for key in net_state):
        raise ConfigError(f"{what}['net'] keys do not all start with {I2SB_PREFIX!r}: not an I²SB network")
    state = {key.removeprefix(I2SB_PREFIX): tensor for key, tensor in net_state.items()}
    if not use_ema:
        return state
    ema = checkpoint.get("ema")
    shadow = ema.get("shadow_params") if isinstance(ema, dict) else None
    if not isinstance(shadow, (list, tuple)) or not all(torch.is_tensor(t) for t in shadow):
        raise ConfigError(f"{what} has no EMA 'shadow_params'; convert with --no-ema for the raw weights")
    if len(shadow) != len(state) or any(
        s.shape != t.shape for s, t in zip(shadow, state.values(), strict=False)):
        raise ConfigError(
            f"{what}: the EMA's {len(shadow)} shadow parameters do not match the {len(state)} tensors of "
            "'net' in order and shape; convert with --no-ema"
        )
    return dict(zip(state, shadow, strict=True))


def pretrained_hint(path: str | Path) -> str:
    """Where to get the weights a missing `path` names, and the command that converts them ("" if unknown).

    The published experiments expect converted files named after the preset (`<preset>.ckpt`)."""
    name = Path(path).stem
    preset = PRESETS.get(name)
    if preset is None:
        return ""
    return (
        f"download {preset.url} and convert it: python -m lit_diffsr convert adm {preset.file} {path} "
        f"--preset {name}"
    )
