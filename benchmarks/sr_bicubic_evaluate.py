"""Bicubic upscaling of an SR test set scored through `python -m lit_diffsr evaluate` (PSNR/SSIM on Y, `scale`
pixels shaved): checks the whole path a user takes (files, greyscale handling, shave) against the published
bicubic baselines. Set14 has a greyscale image (`bridge`), which the SR convention scores on its grey channel.

    python -m benchmarks.sr_bicubic_evaluate --root DIR [--set Set14] [--scale 4] [--resize matlab|pil]

DIR (or $LIT_DIFFSR_SR_DATA) holds <set>/SelfExSR/image_SRF_<scale>/img_NNN_SRF_<scale>_{HR,LR}.png (HR
cropped to a multiple of the scale, LR its MATLAB-bicubic reduction). `--resize matlab` upscales the LR as
MATLAB's imresize does (the published numbers); `pil` uses PIL's bicubic (other borders).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lit_diffsr.evaluate import evaluate_folders

# Bicubic x scale, PSNR_Y / SSIM_Y as published (e.g. Kim et al. 2016, VDSR, Table 3; Lim et al. 2017).
PUBLISHED = {
    ("Set5", 4): (28.42, 0.8104),
    ("Set14", 4): (26.00, 0.7027),
    ("BSD100", 4): (25.96, 0.6675),
    ("Set5", 2): (33.66, 0.9299),
    ("Set14", 2): (30.24, 0.8688),
}


def _cubic(distance: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -1/2 (Keys 1981, eq. 15), MATLAB imresize's `cubic`."""
    d = np.abs(distance)
    return np.where(
        d <= 1, (1.5 * d - 2.5) * d * d + 1, np.where(d <= 2, ((-0.5 * d + 2.5) * d - 4) * d + 2, 0)
    )


def _imresize_matrix(in_size: int, scale: int) -> np.ndarray:
    """(in_size * scale, in_size) matrix of MATLAB's imresize upscaling along one axis: output pixel x
    (1-based) samples u = x / scale + (1 - 1 / scale) / 2 with the 4-tap cubic, weights normalised, and
    taps outside the image mirrored (symmetric padding, the edge pixel repeated)."""
    u = np.arange(1, in_size * scale + 1) / scale + 0.5 * (1 - 1 / scale)
    taps = np.floor(u - 2)[:, None] + np.arange(6)[None, :]  # MATLAB: P = ceil(kernel width 4) + 2
    weights = _cubic(u[:, None] - taps)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_size), np.arange(in_size)[::-1]])
    columns = mirror[(taps.astype(int) - 1) % (2 * in_size)]
    matrix = np.zeros((len(u), in_size))
    np.add.at(matrix, (np.repeat(np.arange(len(u)), 6), columns.ravel()), weights.ravel())
    return matrix


def matlab_bicubic_upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """imresize(image, scale, 'bicubic') of a uint8 (H, W[, C]) image: rows first, then columns, each pass
    rounded to uint8 as MATLAB does for uint8 input."""
    pixels = image.astype(np.float64)
    rows = np.clip(
        np.rint(np.einsum("oh,hw...->ow...", _imresize_matrix(pixels.shape[0], scale), pixels)), 0, 255
    )
    both = np.einsum("ow,hw...->ho...", _imresize_matrix(pixels.shape[1], scale), rows)
    return np.clip(np.rint(both), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=os.environ.get("LIT_DIFFSR_SR_DATA"), help="folder holding <set>/")
    parser.add_argument("--set", default="Set14", choices=sorted({name for name, _ in PUBLISHED}))
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4))
    parser.add_argument("--resize", default="matlab", choices=("matlab", "pil"))
    args = parser.parse_args(argv)
    if args.root is None:
        sys.exit("give --root DIR (or set LIT_DIFFSR_SR_DATA): the folder holding Set5/, Set14/, BSD100/")
    folder = Path(args.root) / args.set / "SelfExSR" / f"image_SRF_{args.scale}"
    lr_files = sorted(folder.glob("*_LR.png"))
    if not lr_files:
        sys.exit(f"no *_LR.png in {folder}; --root must hold {args.set}/SelfExSR/image_SRF_{args.scale}/")
    with tempfile.TemporaryDirectory() as work:
        pred_dir, ref_dir = Path(work, "pred"), Path(work, "ref")
        pred_dir.mkdir()
        ref_dir.mkdir()
        for lr_file in lr_files:
            stem = lr_file.name.removesuffix("_LR.png")
            hr = Image.open(lr_file.with_name(f"{stem}_HR.png"))
            lr = Image.open(lr_file)
            if args.resize == "matlab":
                upscaled = Image.fromarray(matlab_bicubic_upscale(np.asarray(lr), args.scale))
            else:
                upscaled = lr.resize(hr.size, Image.Resampling.BICUBIC)
            upscaled.save(pred_dir / f"{stem}.png")  # greyscale stays greyscale
            hr.save(ref_dir / f"{stem}.png")
        result = evaluate_folders(pred_dir, ref_dir, scale=args.scale, metrics=("psnr", "ssim"))
    for row in result["per_image"]:
        print(f"{row['name']:<16} PSNR_Y {row['psnr_y']:7.3f} dB   SSIM_Y {row['ssim_y']:.4f}")
    summary = result["summary"]
    print(f"{'mean':<16} PSNR_Y {summary['psnr_y']:7.3f} dB   SSIM_Y {summary['ssim_y']:.4f}")
    published = PUBLISHED.get((args.set, args.scale))
    if published:
        print(f"{'published':<16} PSNR_Y {published[0]:7.2f} dB   SSIM_Y {published[1]:.4f}")
    return summary


if __name__ == "__main__":
    main()
