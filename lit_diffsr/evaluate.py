"""`python -m lit_diffsr evaluate pred_dir=... ref_dir=... [lr_dir=... scale=4 out_dir=...]`: score a folder
of output images against a folder of references, matched by file stem.

Per image: PSNR and SSIM (on the BT.601 Y channel with `scale` border pixels shaved, the SR convention,
unless y_channel=false), LPIPS, and SR3's consistency when `lr_dir` is given and scale > 1. Over the set:
their means and the FID between the two folders. Writes metrics.json, metrics.csv (per image),
summary.csv and metrics.md (Markdown tables) to `out_dir` (default: pred_dir).
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lit_diffsr.data.io import ImageReadError, find_images, load_rgb
from lit_diffsr.errors import ConfigError
from lit_diffsr.metrics.fid import FIDStatistics, InceptionFeatures
from lit_diffsr.metrics.image import psnr, sr_consistency, ssim
from lit_diffsr.metrics.perceptual import PerceptualDistance

METRICS = ("psnr", "ssim", "lpips", "fid")
_SHOWN_UNMATCHED = 20  # stems listed in a mismatch error


def _images_by_stem(folder: str | Path, role: str) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{role}={str(folder)!r} is not a folder")
    by_stem: dict[str, Path] = {}
    for path in find_images(folder, recursive=False):
        if path.stem in by_stem:
            raise ConfigError(
                f"{role}: two images share the stem {path.stem!r}: {by_stem[path.stem].name}, {path.name}"
            )
        by_stem[path.stem] = path
    if not by_stem:
        raise ConfigError(f"{role}={str(folder)!r} holds no image files")
    return by_stem


def _check_matched(pred: dict[str, Path], other: dict[str, Path], role: str) -> None:
    missing, extra = sorted(set(pred) - set(other)), sorted(set(other) - set(pred))
    if role == "lr_dir":
        extra = []  # spare low-resolution inputs are harmless
    if missing or extra:
        show = lambda stems: ", ".join(stems[:_SHOWN_UNMATCHED]) + (" ..." * (len(stems) > _SHOWN_UNMATCHED))
        lines = [f"images are matched by file stem, and pred_dir and {role} disagree:"]
        if missing:
            lines.append(f"  in pred_dir but not {role} ({len(missing)}): {show(missing)}")
        if extra:
            lines.append(f"  in {role} but not pred_dir ({len(extra)}): {show(extra)}")
        raise ConfigError("\n".join(lines))


def _read(path: Path) -> torch.Tensor:
    """A file as a (1, 3, H, W) float64 tensor in [-1, 1] (greyscale becomes three equal channels)."""
    pixels = torch.from_numpy(load_rgb(path)).permute(2, 0, 1)[None]
    return pixels.double() / 127.5 - 1


def _match_reference(pred: torch.Tensor, ref: torch.Tensor, scale: int, name: str) -> torch.Tensor:
    """The reference cropped to the prediction's size when it is larger by less than `scale` (the SR
    'modcrop': outputs of an image whose size is not a multiple of the scale are smaller); else as is."""
    (pred_h, pred_w), (ref_h, ref_w) = pred.shape[-2:], ref.shape[-2:]
    if 0 <= ref_h - pred_h < scale and 0 <= ref_w - pred_w < scale:
        return ref[..., :pred_h, :pred_w]
    raise ConfigError(
        f"{name}: prediction is {pred_h}x{pred_w} but the reference is {ref_h}x{ref_w}; they must be equal "
        f"(or the reference larger by less than scale={scale})"
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no inf (PSNR of identical images)


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    lr_dir: str | Path | None = None,
    scale: int = 1,
    y_channel: bool = True,
    metrics: Sequence[str] = METRICS,
    out_dir: str | Path | None = None,
    lpips_net: str = "alex",
    lpips_weights: str | Path | None = None,
    fid_weights: str | Path | None = None,
) -> dict:
    """Score every image of `pred_dir` against the image of `ref_dir` (and `lr_dir`) with the same stem.

    Returns {"config", "num_images", "summary": {metric: mean or FID}, "per_image": [{"name", metric...}]},
    also written as metrics.json; PSNR/SSIM columns are named psnr_y/ssim_y when computed on Y. Non-finite
    values (PSNR of identical images) are null in the JSON and "inf" in the CSV.
    """
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"metrics: unknown {unknown}; choose from {list(METRICS)}")
    if int(scale) < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    preds, refs = _images_by_stem(pred_dir, "pred_dir"), _images_by_stem(ref_dir, "ref_dir")
    _check_matched(preds, refs, "ref_dir")
    lrs = _images_by_stem(lr_dir, "lr_dir") if lr_dir is not None else None
    if lrs is not None:
        _check_matched(preds, lrs, "lr_dir")
    perceptual = PerceptualDistance(lpips_net, lpips_weights) if "lpips" in metrics else None
    inception = InceptionFeatures(fid_weights) if "fid" in metrics else None
    suffix = "_y" if y_channel else ""

    rows, pred_features, ref_features = [], [], []
    for stem in sorted(preds):
        pred = _read(preds[stem])
        ref = _match_reference(pred, _read(refs[stem]), scale, stem)
        row: dict[str, float | str] = {"name": stem}
        if "psnr" in metrics:
            row[f"psnr{suffix}"] = psnr(pred, ref, (-1.0, 1.0), y_channel=y_channel, shave=scale).item()
        if "ssim" in metrics:
            row[f"ssim{suffix}"] = ssim(pred, ref, (-1.0, 1.0), y_channel=y_channel, shave=scale).item()
        if perceptual is not None:
            row["lpips"] = perceptual(pred, ref).item()
        if lrs is not None and scale > 1:
            row["consistency"] = sr_consistency(pred, _read(lrs[stem]), scale).item()
        if inception is not None:
            pred_features.append(inception(pred))
            ref_features.append(inception(ref))
        rows.append(row)

    columns = [key for key in rows[0] if key != "name"]
    summary = {column: float(np.mean([row[column] for row in rows])) for column in columns}
    if inception is not None:
        if len(rows) < 2:
            raise ConfigError("fid needs at least 2 images per folder; drop it from metrics=")
        fake, real = (FIDStatistics.from_features(torch.cat(f)) for f in (pred_features, ref_features))
        summary["fid"] = fake.frechet_distance(real)
    config = {
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "lr_dir": None if lr_dir is None else str(lr_dir),
        "scale": scale,
        "y_channel": y_channel,
        "shave": scale,
        "metrics": list(metrics),
    }
    result = {"config": config, "num_images": len(rows), "summary": summary, "per_image": rows}
    _write_outputs(Path(out_dir if out_dir is not None else pred_dir), result, columns)
    return result


def _write_outputs(out_dir: Path, result: dict, columns: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for_json = {
        **result,
        "summary": {key: _finite_or_none(value) for key, value in result["summary"].items()},
        "per_image": [
            {key: value if key == "name" else _finite_or_none(value) for key, value in row.items()}
            for row in result["per_image"]
        ],
    }
    (out_dir / "metrics.json").write_text(json.dumps(for_json, indent=2, allow_nan=False) + "\n")
    with (out_dir / "metrics.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=["name", *columns])
        writer.writeheader()
        writer.writerows(result["per_image"])
    with (out_dir / "summary.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["metric", "value"])
        writer.writerows([*result["summary"].items(), ("num_images", result["num_images"])])
    (out_dir / "metrics.md").write_text(markdown_report(result, columns))


def markdown_report(result: dict, columns: list[str]) -> str:
    """Summary table (metric | value) and per-image table, in Markdown."""
    lines = [f"# Metrics: {result['config']['pred_dir']} vs {result['config']['ref_dir']}", ""]
    lines += ["| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.6g} |" for name, value in result["summary"].items()]
    lines += [f"| num_images | {result['num_images']} |", ""]
    lines += ["| name | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for row in result["per_image"]:
        lines.append(f"| {row['name']} | " + " | ".join(f"{row[column]:.6g}" for column in columns) + " |")
    return "\n".join(lines) + "\n"


_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _parse(argv: Sequence[str]) -> dict:
    """key=value arguments -> evaluate_folders keyword arguments."""
    allowed = {
        "pred_dir", "ref_dir", "lr_dir", "scale", "y_channel", "metrics", "out_dir",
        "lpips_net", "lpips_weights", "fid_weights",
    }  # fmt: skip
    options: dict = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in allowed:
            raise ConfigError(f"evaluate: unexpected argument {arg!r}; use key=value, keys {sorted(allowed)}")
        options[key] = value
    missing = {"pred_dir", "ref_dir"} - set(options)
    if missing:
        raise ConfigError(f"evaluate: {' and '.join(sorted(missing))} required, e.g. pred_dir=out ref_dir=HR")
    if "scale" in options:
        if not options["scale"].isdigit():
            raise ConfigError(f"evaluate: scale must be a positive integer, got {options['scale']!r}")
        options["scale"] = int(options["scale"])
    if "y_channel" in options:
        if options["y_channel"].lower() not in _FLAGS:
            raise ConfigError(f"evaluate: y_channel must be true or false, got {options['y_channel']!r}")
        options["y_channel"] = _FLAGS[options["y_channel"].lower()]
    if "metrics" in options:
        names = options["metrics"].strip("[]").split(",")
        options["metrics"] = [name.strip() for name in names if name.strip()]
    return options


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: `evaluate pred_dir=DIR ref_dir=DIR [lr_dir=DIR] [scale=4] [y_channel=true]
    [metrics=psnr,ssim,lpips,fid] [out_dir=DIR] [lpips_net=alex] [lpips_weights=FILE] [fid_weights=FILE]`."""
    try:
        result = evaluate_folders(**_parse(sys.argv[1:] if argv is None else argv))
    except (ConfigError, ImageReadError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    columns = [key for key in result["per_image"][0] if key != "name"]
    print(markdown_report(result, columns))
    return result
