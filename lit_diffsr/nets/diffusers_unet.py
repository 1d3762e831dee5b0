"""diffusers `UNet2DModel` folders <-> `lit_diffsr.nets.UNet`, without diffusers at run time.

A folder as `save_pretrained` writes it: `config.json` (read as data: `_class_name` must be `UNet2DModel`,
its fields are mapped to UNet arguments, nothing named in it is imported) and
`diffusion_pytorch_model.safetensors` (read with safetensors: tensors only). Both networks are ADM-style
UNets (diffusers' `ResnetBlock2D` is ADM's ResBlock, AdaGN included with `resnet_time_scale_shift=
"scale_shift"`; `downsample_type` / `upsample_type` "resnet" are ADM's residual resampling; one head width
`attention_head_dim`), so the weights map one to one:
- ``resnets.k.{norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut}`` -> ResBlock
  ``{in_norm.0, in_conv, embed.1, out_norm, out_layers.2, skip}``;
- attention ``{group_norm, to_q | to_k | to_v, to_out.0}`` (linear layers) -> ``{norm, qkv, proj_out}``
  (1x1 convolutions; q, k, v stacked in that order, heads inside each as this UNet splits them).

What cannot map (refused in one line, naming the field): diffusers' Fourier time embedding, sin-first or
shifted frequencies, centred inputs, other block types, attention only on one side of the UNet or not in
the middle block, a mid-block attention without GroupNorm (scale_shift models need
`attn_norm_num_groups`), other activations or norm eps; and from lit_diffsr: a conditioning image
(`cond_channels`), the augmentation-level embedding, `timestep_scale`, `max_period`, a first conv wider or
narrower than `model_channels` (`stem_channels`, fractional `channel_mult`), and `num_heads` heads whose
width differs between attended levels (diffusers has one head width).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.nets.adm_import import check_fits
from lit_diffsr.nets.unet import AttentionBlock, ResBlock, UNet

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
CLASS_NAME = "UNet2DModel"
# Written on export: the last class row is lit_diffsr's null class (not a class of the data).
NULL_CLASS_KEY = "lit_diffsr_null_class"

RESNET_NAMES = {"norm1": "in_norm.0", "conv1": "in_conv", "time_emb_proj": "embed.1", "norm2": "out_norm",
                "conv2": "out_layers.2", "conv_shortcut": "skip"}
# Block types that map, with the resampling their non-attention form does (attention ones: *sample_type).
DOWN_BLOCKS = {"DownBlock2D": "conv", "ResnetDownsampleBlock2D": "resnet", "AttnDownBlock2D": None}
UP_BLOCKS = {"UpBlock2D": "conv", "ResnetUpsampleBlock2D": "resnet", "AttnUpBlock2D": None}
# diffusers `UNet2DModel` arguments that must have these values to map (what this UNet computes).
FIXED_FIELDS = {"center_input_sample": False, "time_embedding_type": "positional", "time_embedding_dim": None,
                "freq_shift": 0, "flip_sin_to_cos": True, "mid_block_type": "UNetMidBlock2D",
                "mid_block_scale_factor": 1, "downsample_padding": 1, "act_fn": "silu", "norm_eps": 1e-5,
                "add_attention": True, "class_embed_type": None}


def unet_folder(path: str | Path) -> Path:
    """The UNet folder of `path`: the folder itself, or a pipeline folder's `unet/`."""
    path = Path(path)
    if (path / "unet" / CONFIG_FILE).is_file():
        return path / "unet"
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"{path} is not a diffusers UNet2DModel folder (no {CONFIG_FILE}, no unet/)")
    return path


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"{folder / CONFIG_FILE} is not readable JSON: {error}") from None
    if not isinstance(config, dict) or config.get("_class_name") != CLASS_NAME:
        name = config.get("_class_name") if isinstance(config, dict) else None
        raise ConfigError(f"{folder / CONFIG_FILE}: _class_name={name!r}; only {CLASS_NAME} folders are read")
    return config


def unet_kwargs(config: dict[str, Any], where: str) -> dict[str, Any]:
    """lit_diffsr UNet arguments for a `UNet2DModel` config (data), or a ConfigError naming the field."""
    missing = [key for key in ("sample_size", "block_out_channels", "down_block_types", "up_block_types")
               if not config.get(key)]
    if missing:
        raise ConfigError(f"{where}: config.json lacks {missing}; write the folder with save_pretrained")
    for key, value in FIXED_FIELDS.items():
        if config.get(key, value) != value:
            found = config[key]
            raise ConfigError(f"{where}: {key}={found!r} has no lit_diffsr equivalent (needs {value!r})")
    down, up = list(config["down_block_types"]), list(config["up_block_types"])
    if any(b not in DOWN_BLOCKS for b in down) or any(b not in UP_BLOCKS for b in up):
        raise ConfigError(f"{where}: block types {down} / {up}; these map: {DOWN_BLOCKS} / {UP_BLOCKS}")
    attended_down = [b.startswith("Attn") for b in down]
    if attended_down != [b.startswith("Attn") for b in reversed(up)]:
        raise ConfigError(f"{where}: attention in {down} / {up} is not mirrored as in the lit_diffsr UNet")
    # the resampler of every level but the lowest (down) / the highest (up): a plain conv or a ResBlock
    down_type, up_type = config.get("downsample_type", "conv"), config.get("upsample_type", "conv")
    resample = {down_type if b.startswith("Attn") else DOWN_BLOCKS[b] for b in down[:-1]}
    resample |= {up_type if b.startswith("Attn") else UP_BLOCKS[b] for b in up[:-1]}
    if len(resample) > 1:
        raise ConfigError(f"{where}: some levels resample with convolutions, others with residual blocks")
    widths = list(config["block_out_channels"])
    size = config["sample_size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    scale_shift = config.get("resnet_time_scale_shift", "default")
    if scale_shift not in ("default", "scale_shift"):
        raise ConfigError(f"{where}: resnet_time_scale_shift={scale_shift!r}; default or scale_shift map")
    groups = config.get("norm_num_groups", 32)
    if config.get("attn_norm_num_groups") not in (None, groups) or (
        scale_shift == "scale_shift" and config.get("attn_norm_num_groups") is None
    ):
        raise ConfigError(f"{where}: the mid-block attention needs GroupNorm({groups}): attn_norm_num_groups")
    if any(width % widths[0] for width in widths):
        raise ConfigError(f"{where}: block_out_channels {widths} are not multiples of the first")
    in_channels, out_channels = config.get("in_channels", 3), config.get("out_channels", 3)
    if out_channels not in (in_channels, 2 * in_channels):
        raise ConfigError(f"{where}: out_channels={out_channels} is neither in_channels nor twice it")
    classes = config.get("num_class_embeds")
    if classes is not None and config.get(NULL_CLASS_KEY):
        classes -= 1
    head_dim = config.get("attention_head_dim")
    return {
        "image_size": size,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "learn_sigma": out_channels == 2 * in_channels,
        "model_channels": widths[0],
        "channel_mult": [width // widths[0] for width in widths],
        "num_res_blocks": config.get("layers_per_block", 2),
        "attention_resolutions": [size // 2**level for level, on in enumerate(attended_down) if on],
        "num_heads": 1,  # attention_head_dim None: one head as wide as the block
        "num_head_channels": -1 if head_dim is None else head_dim,
        "dropout": config.get("dropout", 0.0),
        "use_scale_shift_norm": scale_shift == "scale_shift",
        "resblock_updown": resample == {"resnet"},
        "num_classes": classes,
        "norm_groups": groups,
    }


def module_pairs(net: UNet) -> list[tuple[str, str, str]]:
    """(lit_diffsr module, diffusers module, kind) for every block of `net`; kind is "resnet",
    "attention" or "conv" (a plain resampler: ``op`` / ``conv`` here, ``conv`` there)."""
    levels = len(net.channel_mult)
    pairs = []

    def kind_of(module: torch.nn.Module) -> str:
        return "attention" if isinstance(module, AttentionBlock) else (
            "resnet" if isinstance(module, ResBlock) else "conv")

    index = 1
    for level in range(levels):
        for layer in range(net.num_res_blocks):
            for position, module in enumerate(net.input_blocks[index]):
                group = "attentions" if isinstance(module, AttentionBlock) else "resnets"
                pairs.append((f"input_blocks.{index}.{position}", f"down_blocks.{level}.{group}.{layer}",
                              kind_of(module)))
            index += 1
        if level != levels - 1:
            module = net.input_blocks[index][0]
            pairs.append((f"input_blocks.{index}.0", f"down_blocks.{level}.downsamplers.0", kind_of(module)))
            index += 1
    for position, module in enumerate(net.middle_block):
        group = "attentions.0" if isinstance(module, AttentionBlock) else f"resnets.{position // 2}"
        pairs.append((f"middle_block.{position}", f"mid_block.{group}", kind_of(module)))
    for index, block in enumerate(net.output_blocks):
        level, layer = divmod(index, net.num_res_blocks + 1)
        for position, module in enumerate(block):
            if position == 0:
                theirs = f"up_blocks.{level}.resnets.{layer}"
            elif isinstance(module, AttentionBlock):
                theirs = f"up_blocks.{level}.attentions.{layer}"
            else:
                theirs = f"up_blocks.{level}.upsamplers.0"
            pairs.append((f"output_blocks.{index}.{position}", theirs, kind_of(module)))
    return pairs


GLOBAL_NAMES = {"input_blocks.0.0": "conv_in", "time_embed.0": "time_embedding.linear_1",
                "time_embed.2": "time_embedding.linear_2", "label_embed": "class_embedding",
                "out.0": "conv_norm_out", "out.2": "conv_out"}


def module_names(net: UNet) -> dict[str, str]:
    """lit_diffsr module path -> diffusers module path, for every layer but attention's q / k / v."""
    names = dict(GLOBAL_NAMES)
    for ours, theirs, kind in module_pairs(net):
        if kind == "resnet":
            names.update({f"{ours}.{mine}": f"{theirs}.{other}" for other, mine in RESNET_NAMES.items()})
        elif kind == "attention":
            names.update({f"{ours}.norm": f"{theirs}.group_norm", f"{ours}.proj_out": f"{theirs}.to_out.0"})
        else:
            conv = "op" if hasattr(net.get_submodule(ours), "op") else "conv"
            names[f"{ours}.{conv}"] = f"{theirs}.conv"
    return names


def diffusers_to_unet_state(state: dict[str, torch.Tensor], net: UNet, where: str) -> dict[str, torch.Tensor]:
    """A `UNet2DModel` state_dict in `net`'s names and layouts, checked against `net`."""
    state = dict(state)
    converted = {}
    for ours, theirs, kind in module_pairs(net):
        if kind != "attention":
            continue
        for suffix in ("weight", "bias"):
            parts = [state.pop(f"{theirs}.to_{name}.{suffix}", None) for name in "qkv"]
            if all(part is not None for part in parts):  # rows [q | k | v], heads inside each
                stacked = torch.cat(parts).float()
                if suffix == "weight":  # linear -> 1x1 conv
                    stacked = stacked[..., None, None]
                converted[f"{ours}.qkv.{suffix}"] = stacked
    theirs_to_ours = {theirs: ours for ours, theirs in module_names(net).items()}
    for key, tensor in state.items():
        module_path, _, suffix = key.rpartition(".")
        name = f"{theirs_to_ours.get(module_path, module_path)}.{suffix}"
        if name.endswith("proj_out.weight") and tensor.ndim == 2:  # linear -> 1x1 conv
            tensor = tensor[..., None, None]
        converted[name] = tensor.float()
    if net.num_classes is not None and "label_embed.weight" in converted:
        table = converted["label_embed.weight"]
        if table.shape[0] == net.num_classes:  # no null row in the file: a zero one
            converted["label_embed.weight"] = torch.cat([table, table.new_zeros(1, table.shape[1])])
    check_fits(converted, net, where, "the folder's config.json does not describe its weights")
    return converted


def unet_to_diffusers_state(net: UNet) -> dict[str, torch.Tensor]:
    """`net`'s weights under `UNet2DModel` names and layouts (the inverse of `diffusers_to_unet_state`)."""
    names = module_names(net)
    attention = {ours: theirs for ours, theirs, kind in module_pairs(net) if kind == "attention"}
    state = {}
    for key, tensor in net.state_dict().items():
        module_path, _, suffix = key.rpartition(".")
        if module_path.endswith(".qkv") and module_path.removesuffix(".qkv") in attention:
            theirs = attention[module_path.removesuffix(".qkv")]
            for name, part in zip("qkv", tensor.chunk(3), strict=True):
                state[f"{theirs}.to_{name}.{suffix}"] = part.flatten(1) if suffix == "weight" else part
            continue
        if module_path.endswith(".proj_out") and suffix == "weight":
            tensor = tensor.flatten(1)
        state[f"{names[module_path]}.{suffix}"] = tensor.detach().contiguous()
    return state


def unet_config_for_diffusers(net: UNet) -> dict[str, Any]:
    """The `UNet2DModel` config.json of `net`, or a ConfigError naming what does not map."""
    why = []
    if net.cond_channels:
        why.append("cond_channels (a concatenated conditioning image)")
    if net.use_aug_level:
        why.append("use_aug_level (the augmentation-level embedding)")
    if net.timestep_scale != 1.0 or net.max_period != 10000:
        why.append("timestep_scale / max_period")
    if net.input_blocks[0][0].out_channels != net.model_channels:
        why.append("a first conv wider or narrower than model_channels (stem_channels, channel_mult[0] != 1)")
    attention = [module for module in net.modules() if isinstance(module, AttentionBlock)]
    head_widths = {module.qkv.in_channels // module.num_heads for module in attention}
    if len(head_widths) > 1:
        why.append(f"heads of different widths {sorted(head_widths)} (set num_head_channels)")
    if why:
        raise ConfigError("this UNet cannot be written as a diffusers UNet2DModel: " + "; ".join(why))
    levels = len(net.channel_mult)
    widths = [net.input_blocks[1 + level * (net.num_res_blocks + 1)][0].in_conv.out_channels
              for level in range(levels)]
    attended = [len(net.input_blocks[1 + level * (net.num_res_blocks + 1)]) > 1 for level in range(levels)]
    sample = next(module for module in net.modules() if isinstance(module, ResBlock))
    first_sampler = net.input_blocks[net.num_res_blocks + 1][0] if levels > 1 else None
    resample = "resnet" if isinstance(first_sampler, ResBlock) else "conv"
    groups = net.out[0].num_groups
    plain_down, plain_up = ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if resample == "resnet" else (
        "DownBlock2D", "UpBlock2D")
    config = {
        "_class_name": CLASS_NAME,
        "sample_size": net.image_size,
        "in_channels": net.in_channels,
        "out_channels": 2 * net.out_channels if net.learn_sigma else net.out_channels,
        "down_block_types": ["AttnDownBlock2D" if on else plain_down for on in attended],
        "up_block_types": ["AttnUpBlock2D" if on else plain_up for on in reversed(attended)],
        "block_out_channels": widths,
        "layers_per_block": net.num_res_blocks,
        "downsample_type": resample,
        "upsample_type": resample,
        "dropout": sample.out_layers[1].p,
        "attention_head_dim": head_widths.pop(),
        "norm_num_groups": groups,
        "attn_norm_num_groups": groups,
        "resnet_time_scale_shift": "scale_shift" if sample.use_scale_shift_norm else "default",
        "num_class_embeds": None if net.num_classes is None else net.num_classes + 1,
        NULL_CLASS_KEY: net.num_classes is not None,
        **FIXED_FIELDS,
    }
    return config


def read_unet_folder(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(lit_diffsr UNet config with `_target_`, its state_dict) of a `UNet2DModel` folder (or pipeline's)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = unet_folder(path)
    kwargs = {"_target_": "lit_diffsr.nets.UNet", **unet_kwargs(read_config(folder), str(folder))}
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"{folder}: no {WEIGHTS_FILE} (save with safe_serialization=True)")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as error:
        raise ConfigError(f"{weights} is not a readable safetensors file: {error}") from None
    try:
        with torch.device("meta"):  # only its names and shapes are needed
            net = UNet(**{key: value for key, value in kwargs.items() if key != "_target_"})
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{folder / CONFIG_FILE} describes no lit_diffsr UNet: {error}") from None
    return kwargs, diffusers_to_unet_state(state, net, str(folder))


def write_unet_folder(net: UNet, folder: str | Path) -> Path:
    """`net` as a `UNet2DModel` folder (config.json + safetensors), as `save_pretrained` writes one."""
    from safetensors.torch import save_file

    config = unet_config_for_diffusers(net)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(unet_to_diffusers_state(net), folder / WEIGHTS_FILE, metadata={"format": "pt"})
    return folder


# DDPMScheduler's defaults, used when the folder has no scheduler config beside the UNet.
SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4,
                      "beta_end": 0.02, "variance_type": "fixed_small", "prediction_type": "epsilon"}
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCES = {"fixed_small": "fixed_small", "fixed_large": "fixed_large", "learned_range": "learned_range"}


def diffusion_config(path: str | Path, learn_sigma: bool) -> dict[str, Any]:
    """`model.diffusion` from the pipeline's `scheduler/scheduler_config.json` (DDPM / DDIM scheduler
    fields, read as data), or DDPMScheduler's defaults when there is none."""
    path = Path(path)
    candidates = [folder / "scheduler" / "scheduler_config.json" for folder in (path, path.parent)]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    config = dict(SCHEDULER_DEFAULTS)
    if found is not None:
        try:
            config.update(json.loads(found.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(f"{found} is not readable JSON: {error}") from None
    where = str(found or path)
    schedule = config["beta_schedule"]
    # diffusers: "linear" = linspace(beta_start, beta_end), "scaled_linear" = linspace of square roots,
    # "squaredcos_cap_v2" = improved DDPM's cosine (Nichol & Dhariwal 2021 eq. 17, betas capped at 0.999).
    kinds = {"linear": "linspace", "scaled_linear": "sqrt_linear", "squaredcos_cap_v2": "cosine"}
    if schedule not in kinds or config["prediction_type"] not in PREDICTIONS:
        raise ConfigError(
            f"{where}: beta_schedule={schedule!r} / prediction_type={config['prediction_type']!r} "
            f"do not map; known: {sorted(kinds)} / {sorted(PREDICTIONS)}"
        )
    variance = "learned_range" if learn_sigma else VARIANCES.get(config["variance_type"], "fixed_small")
    return {
        "schedule": kinds[schedule],
        "num_timesteps": int(config["num_train_timesteps"]),
        "schedule_kwargs": {} if schedule == "squaredcos_cap_v2" else {
            "start": float(config["beta_start"]), "end": float(config["beta_end"])},
        "prediction": PREDICTIONS[config["prediction_type"]],
        "variance": variance,
        "loss": "hybrid" if variance == "learned_range" else "mse",
    }
