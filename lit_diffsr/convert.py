"""`python -m lit_diffsr convert`: published weights -> lit_diffsr checkpoints (and a UNet -> diffusers).

Every output is a checkpoint as `fit` writes it (`lit_diffsr_method`, `hyper_parameters` with the net's
`_target_`, the weights as `state_dict`), so `load_method`, `model.prior_ckpt=` (DDRM), `model.init_from=`
(I²SB), cascade stages, `predict model=pretrained model.path=` and `predict ckpt_path=` take it:
- `adm`: an openai guided-diffusion / improved-diffusion UNet (`--preset NAME`, or `--source` and
  `--flags k=v ...` as on the authors' command line) -> ClassConditionalDiffusion, or CascadeStage for a
  SuperResModel (bilinear conditioning), with the preset's diffusion (schedule, T, learned range);
- `i2sb`: an NVlabs I²SB checkpoint (EMA weights by default) -> I2SB with their time input;
- `diffusers`: a diffusers `UNet2DModel` folder (config.json + safetensors) -> ClassConditionalDiffusion;
- `to-diffusers`: the UNet of a lit_diffsr checkpoint -> a `UNet2DModel` folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning
import torch
from hydra.errors import InstantiationException

from lit_diffsr.arguments import ArgumentParser
from lit_diffsr.errors import ConfigError, exit_on_user_error
from lit_diffsr.methods import I2SB, CascadeStage, ClassConditionalDiffusion, DiffusionMethod
from lit_diffsr.nets import UNet, adm_import, diffusers_unet
from lit_diffsr.nets.adm_import import PRESETS
from lit_diffsr.safe_load import load_tensors

# ADM's own sampling: 250 respaced ancestral steps (guided-diffusion README's SAMPLE_FLAGS).
ADM_SAMPLER = {"name": "ancestral", "steps": "250", "eta": 0.0, "clip_denoised": True}
# NVlabs I²SB sampling defaults (sample.py): every step; beta_max is the run's (pass --beta-max).
I2SB_SAMPLER = {"steps": 999, "ot_ode": False, "clip_denoised": False, "seed": None}


def checkpoint_of(method: DiffusionMethod) -> dict[str, Any]:
    """The dict `fit` would save for `method` (weights, hyper-parameters, class), loadable weights_only."""
    return {
        "state_dict": {key: value.detach() for key, value in method.state_dict().items()},
        "hyper_parameters": plain_containers(dict(method.hparams)),
        "lit_diffsr_method": f"{type(method).__module__}.{type(method).__qualname__}",
        "pytorch-lightning_version": lightning.__version__,
        "epoch": 0,
        "global_step": 0,
    }


def plain_containers(value: Any) -> Any:
    """Hyper-parameters as plain containers (tuples as lists), so the checkpoint loads weights_only."""
    if isinstance(value, dict):
        return {key: plain_containers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_containers(item) for item in value]
    return value


def save_checkpoint(method: DiffusionMethod, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_of(method), out)
    return out


def built(make: Callable[[], DiffusionMethod], what: str) -> DiffusionMethod:
    """`make()`; a network the flags cannot build (the UNet's ValueError, Hydra-wrapped) is a ConfigError."""
    try:
        return make()
    except ConfigError:
        raise
    except (ValueError, InstantiationException) as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ConfigError(f"{what}: the flags describe no valid network: {reason}") from None


def adm_method(source: str, super_res: bool, flags: dict[str, Any]) -> DiffusionMethod:
    """The (randomly initialised) lit_diffsr method with ADM's architecture and diffusion for `flags`
    (resolved: `adm_import.resolve_flags`)."""
    net = adm_import.unet_config(source, super_res, flags)
    diffusion = adm_import.diffusion_config(flags)
    num_classes = net["num_classes"]
    if super_res:
        if flags["large_size"] % flags["small_size"]:
            raise ConfigError(f"large_size={flags['large_size']} is not a multiple of small_size")
        return built(lambda: CascadeStage(
            net, diffusion, dict(ADM_SAMPLER), scale_factor=flags["large_size"] // flags["small_size"],
            num_classes=num_classes, cond_upsample="bilinear",
        ), "convert adm")
    return built(
        lambda: ClassConditionalDiffusion(net, diffusion, dict(ADM_SAMPLER), num_classes=num_classes),
        "convert adm",
    )


def convert_adm(
    path: str | Path,
    out: str | Path,
    preset: str | None = None,
    source: str = "guided",
    super_res: bool = False,
    flags: dict[str, Any] | None = None,
) -> Path:
    """Convert an openai guided-diffusion / improved-diffusion UNet state_dict at `path` to a lit_diffsr
    checkpoint at `out`. `preset` names a released checkpoint (its published flags); `flags` override
    them or, without a preset, describe the network (`source`, `super_res`: SuperResModel)."""
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        chosen = PRESETS[preset]
        source, super_res, flags = chosen.source, chosen.super_res, {**chosen.flags, **(flags or {})}
    flags = adm_import.resolve_flags(source, super_res, dict(flags or {}))
    method = adm_method(source, super_res, flags)
    loaded = load_tensors(path, what="convert adm")
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):  # a wrapped state_dict
        loaded = loaded["state_dict"]
    state = adm_import.tensor_dict(loaded, str(path))
    legacy = not flags["use_new_attention_order"]  # improved-diffusion only has the legacy order
    method.net.load_state_dict(adm_import.adm_to_unet_state(state, method.net, legacy, str(path)))
    return save_checkpoint(method, out)


def convert_i2sb(
    path: str | Path,
    out: str | Path,
    cond_x1: bool = False,
    beta_max: float = 0.3,
    use_ema: bool = True,
    flags: dict[str, Any] | None = None,
) -> Path:
    """Convert an NVlabs I²SB checkpoint (`latest.pt`: {"net", "ema", ...}) to a lit_diffsr I2SB checkpoint.

    The network is I²SB's ADM 256 (learn_sigma off; 6 input channels with `cond_x1`; `flags` override its
    guided-diffusion flags); its time input is their noise level N · linspace(1e-4, 1, N)[n]. `beta_max`
    must be the run's `--beta-max`."""
    flags = {**adm_import.I2SB_FLAGS, **(flags or {}), "learn_sigma": False}  # I²SB drops the variance
    flags = adm_import.resolve_flags("guided", False, flags)
    net = adm_import.unet_config("guided", False, flags)
    method = built(lambda: I2SB(
        net, bridge={"n_steps": 1000, "beta_max": float(beta_max), "beta_min": 1e-4},
        sampler=dict(I2SB_SAMPLER), cond_x1=cond_x1, x1_upsample="nearest", time_input="noise_level",
    ), "convert i2sb")
    checkpoint = load_tensors(path, what="convert i2sb")
    state = adm_import.i2sb_release_state(checkpoint, use_ema, str(path))
    legacy = not flags["use_new_attention_order"]
    method.net.load_state_dict(adm_import.adm_to_unet_state(state, method.net, legacy, str(path)))
    return save_checkpoint(method, out)


def _parse_flags(pairs: Sequence[str]) -> dict[str, str]:
    flags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--flags {pair!r}: write name=value, e.g. num_channels=256")
        flags[key.lstrip("-")] = value
    return flags


def _parser() -> argparse.ArgumentParser:
    presets = "\n".join(f"  {name:<34} {preset.source}-diffusion {preset.file}"
                        for name, preset in PRESETS.items())
    parser = ArgumentParser(
        prog="python -m lit_diffsr convert",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert published weights to lit_diffsr checkpoints (or a UNet to diffusers).",
        epilog=f"presets (convert adm FILE OUT --preset NAME):\n{presets}\n\nexamples:\n"
        "  python -m lit_diffsr convert adm 256x256_diffusion_uncond.pt pretrained/256x256_diffusion_uncond"
        ".ckpt --preset 256x256_diffusion_uncond\n"
        "  python -m lit_diffsr convert adm model.pt out.ckpt --source guided --flags image_size=64 "
        "num_channels=128 learn_sigma=True\n"
        "  python -m lit_diffsr convert i2sb results/sr4x-pool/latest.pt i2sb_sr4x_pool.ckpt\n"
        "  python -m lit_diffsr convert diffusers my_unet_folder out.ckpt\n"
        "  python -m lit_diffsr convert to-diffusers run/checkpoints/last.ckpt my_unet_folder",
    )
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="{adm,i2sb,diffusers,to-diffusers}")
    adm = kinds.add_parser("adm", help="openai guided-diffusion / improved-diffusion UNet .pt")
    adm.add_argument("path")
    adm.add_argument("out")
    adm.add_argument("--preset", choices=sorted(PRESETS), help="a released checkpoint's published flags")
    adm.add_argument("--source", choices=adm_import.SOURCES, default="guided")
    adm.add_argument("--super-res", action="store_true", help="a SuperResModel (large_size, small_size)")
    adm.add_argument("--flags", nargs="*", default=[], metavar="NAME=VALUE",
                     help="the authors' MODEL/DIFFUSION flags, e.g. num_channels=256 learn_sigma=True")
    i2sb = kinds.add_parser("i2sb", help="NVlabs I²SB checkpoint (latest.pt)")
    i2sb.add_argument("path")
    i2sb.add_argument("out")
    i2sb.add_argument("--cond-x1", action="store_true", help="the run used --cond-x1")
    i2sb.add_argument("--beta-max", type=float, default=0.3, help="the run's --beta-max (default 0.3)")
    i2sb.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA")
    diffusers = kinds.add_parser("diffusers", help="diffusers UNet2DModel folder (or a pipeline folder)")
    diffusers.add_argument("path")
    diffusers.add_argument("out")
    export = kinds.add_parser("to-diffusers", help="the UNet of a lit_diffsr checkpoint -> UNet2DModel")
    export.add_argument("path")
    export.add_argument("out")
    return parser


def run(args: argparse.Namespace) -> Path:
    if args.kind == "adm":
        return convert_adm(args.path, args.out, args.preset, args.source, args.super_res,
                           _parse_flags(args.flags))
    if args.kind == "i2sb":
        return convert_i2sb(args.path, args.out, args.cond_x1, args.beta_max, not args.no_ema)
    if args.kind == "diffusers":
        return save_checkpoint(ClassConditionalDiffusion.from_diffusers(args.path), args.out)
    return export_diffusers(args.path, args.out)


def export_diffusers(path: str | Path, out: str | Path) -> Path:
    """Write the UNet of the lit_diffsr checkpoint at `path` as a diffusers `UNet2DModel` folder `out`
    (see `lit_diffsr.nets.diffusers_unet` for what maps); the weights are the checkpoint's (EMA) ones."""
    from lit_diffsr.methods import load_method

    method = load_method(path)
    if not isinstance(method.net, UNet):
        raise ConfigError(f"{path}: the network of a {type(method).__name__} is not a lit_diffsr UNet")
    return diffusers_unet.write_unet_folder(method.net, out)


def main(argv: Sequence[str] | None = None) -> Path:
    with exit_on_user_error():
        out = run(_parser().parse_args(list(sys.argv[1:] if argv is None else argv)))
    print(f"wrote {out}")
    return out
