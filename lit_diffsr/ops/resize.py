"""Resizing of NCHW tensor batches, as methods use it to build their conditioning input."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upsample_bicubic(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic upsampling of an NCHW batch in [-1, 1] by `scale` (the usual SR conditioning
    input, e.g. SR3's interpolated low-res image), clamped back into [-1, 1]. PyTorch's bicubic
    kernel is Keys' cubic with a = -0.75 (as OpenCV), not the a = -0.5 of
    `lit_diffsr.data.degradations.downsample`."""
    upsampled = F.interpolate(images, scale_factor=scale, mode="bicubic", align_corners=False)
    return upsampled.clamp(-1.0, 1.0)
