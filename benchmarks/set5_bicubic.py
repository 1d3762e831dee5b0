"""Bicubic x4 on Set5 through lit_diffsr's PSNR (Y channel, 4 pixels shaved): the SR literature reports
28.42 dB. A check that the metric convention (BT.601 luma, shave, 8-bit data) matches the published one.

    python benchmarks/set5_bicubic.py [--root DIR] [--scale 4]

DIR (default $LIT_DIFFSR_SR_DATA, else <paths.data_dir>/sr: $LIT_DIFFSR_DATA/sr or ./datasets/sr) holds
Set5/SelfExSR/image_SRF_<scale>/ with img_00k_SRF_<scale>_{HR,LR}.png (HR cropped to a multiple of the
scale, LR its MATLAB-bicubic reduction).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lit_diffsr.metrics.image import psnr, ssim
from lit_diffsr.runtime import configured_data_dir

# The SelfExSR release of the SR test sets (MATLAB-bicubic LR): <paths.data_dir>/sr/<Set>/SelfExSR/.
DEFAULT_ROOT = configured_data_dir() / "sr"
PUBLISHED_PSNR = {2: 33.66, 3: 30.39, 4: 28.42}  # Set5 bicubic, Y channel
PUBLISHED_SSIM = {2: 0.9299, 3: 0.8682, 4: 0.8104}


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> (1, 3, H, W) float64 in [0, 255]."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float64)).permute(2, 0, 1)[None]


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=os.environ.get("LIT_DIFFSR_SR_DATA", DEFAULT_ROOT))
    parser.add_argument("--scale", type=int, default=4, choices=sorted(PUBLISHED_PSNR))
    args = parser.parse_args(argv)
    folder = Path(args.root) / "Set5" / "SelfExSR" / f"image_SRF_{args.scale}"
    lr_files = sorted(folder.glob("*_LR.png"))
    if not lr_files:
        sys.exit(
            f"no *_LR.png in {folder}; pass --root, or set LIT_DIFFSR_SR_DATA to the folder holding Set5/ "
            "(or LIT_DIFFSR_DATA to the one holding sr/)"
        )
    psnrs, ssims = [], []
    for lr_file in lr_files:
        hr = Image.open(lr_file.with_name(lr_file.name.replace("_LR", "_HR")))
        upscaled = Image.open(lr_file).convert("RGB").resize(hr.size, Image.Resampling.BICUBIC)
        pred, target = to_tensor(upscaled), to_tensor(hr)
        psnrs.append(psnr(pred, target, 255.0, y_channel=True, shave=args.scale).item())
        ssims.append(ssim(pred, target, 255.0, y_channel=True, shave=args.scale).item())
        print(f"{lr_file.stem.replace('_LR', ''):<16} PSNR_Y {psnrs[-1]:7.3f} dB   SSIM_Y {ssims[-1]:.4f}")
    mean = float(np.mean(psnrs))
    print(f"{'mean':<16} PSNR_Y {mean:7.3f} dB   SSIM_Y {np.mean(ssims):.4f}")
    published_psnr, published_ssim = PUBLISHED_PSNR[args.scale], PUBLISHED_SSIM[args.scale]
    print(f"{'published':<16} PSNR_Y {published_psnr:7.2f} dB   SSIM_Y {published_ssim:.4f}")
    return mean


if __name__ == "__main__":
    main()
