"""Full-reference image metrics: PSNR, SSIM, the Y (luma) channel convention and SR3's consistency.

Every function takes batched NCHW tensors and returns one value per image (shape (N,)); averaging is left
to the caller (the SR literature averages per-image PSNR, it does not pool the squared errors).

`data_range` says where the pixel values live, as in torchmetrics:
  - a float R: values in [0, R] (1.0 or 255.0 for image files),
  - a pair (lo, hi): values in [lo, hi]; the framework's images use (-1.0, 1.0).
It is converted at the edge: images are mapped to [0, 1] and the metric runs there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio

DataRange = float | tuple[float, float]
Downsampler = Callable[[torch.Tensor, int], torch.Tensor]

# ITU-R BT.601 luma for R, G, B in [0, 1] with 8-bit headroom (MATLAB's rgb2ycbcr):
# Y = (16 + 65.481 R + 128.553 G + 24.966 B) / 255, in [16/255, 235/255].
BT601_LUMA_OFFSET = 16.0
BT601_LUMA_WEIGHTS = (65.481, 128.553, 24.966)

SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # Wang et al. 2004, Sec. III-C

# Range values may exceed by this fraction of the span (float rounding) before the input counts as wrong.
_RANGE_TOLERANCE = 1e-3


def rgb_to_y(images: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """ITU-R BT.601 luma Y of RGB images in [0, R] (R = `data_range`: 1.0 or 255.0), MATLAB's rgb2ycbcr.

    Y = 16 R/255 + (65.481 r + 128.553 g + 24.966 b) / 255 with r, g, b the channels in [0, R];
    for R = 1 this is Y in [16/255, 235/255], for R = 255 Y in [16, 235] (not rounded).
    Input (..., 3, H, W); output (..., 1, H, W). A one-channel image is returned unchanged (it is already
    luminance, as MATLAB evaluation scripts treat greyscale test images).
    """
    channels = images.shape[-3] if images.dim() >= 3 else 0
    if channels == 1:
        return images
    if channels != 3:
        raise ValueError(f"rgb_to_y: expected 3 (RGB) or 1 channel(s) at dim -3, got {tuple(images.shape)}")
    weights = images.new_tensor(BT601_LUMA_WEIGHTS).view(3, 1, 1)
    return BT601_LUMA_OFFSET * data_range / 255.0 + (images * weights).sum(dim=-3, keepdim=True) / 255.0


def rgb_to_grey(images: torch.Tensor) -> torch.Tensor:
    """Grey value of (..., 3, H, W) images as ITU-R BT.601 luma without the studio range's offset and
    scale: 0.299 R + 0.587 G + 0.114 B (the `BT601_LUMA_WEIGHTS` / 219; PIL's convert("L"), unrounded).
    The weights sum to 1, so three equal channels give that channel back exactly, in any data range.
    A one-channel image is returned unchanged."""
    if images.shape[-3] == 1:
        return images
    weights = images.new_tensor(BT601_LUMA_WEIGHTS).view(3, 1, 1) / sum(BT601_LUMA_WEIGHTS)
    return (images * weights).sum(dim=-3, keepdim=True)


def to_unit_range(images: torch.Tensor, data_range: DataRange, name: str = "images") -> torch.Tensor:
    """Map images from `data_range` to [0, 1] in float64, checking that they lie in the stated range.

    Values outside the range by more than 0.1 % of its span mean the range is wrong (e.g. [0, 255]
    images with data_range=1.0), which would silently change every metric, so they raise.
    """
    low, high = (0.0, float(data_range)) if isinstance(data_range, int | float) else map(float, data_range)
    if not high > low:
        raise ValueError(f"data_range must be R > 0 or (lo, hi) with hi > lo, got {data_range!r}")
    span = high - low
    found_min, found_max = images.min().item(), images.max().item()
    if found_min < low - _RANGE_TOLERANCE * span or found_max > high + _RANGE_TOLERANCE * span:
        raise ValueError(
            f"{name} has values in [{found_min:.4g}, {found_max:.4g}] but data_range={data_range!r} says "
            f"[{low:g}, {high:g}]; pass the range the images are really in ((-1.0, 1.0) inside lit_diffsr)"
        )
    return ((images.double() - low) / span).clamp(0.0, 1.0)


def _prepare_pair(
    pred: torch.Tensor, target: torch.Tensor, data_range: DataRange, y_channel: bool, shave: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images in [0, 1], luma when `y_channel`, with `shave` pixels cropped from every border."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(
            f"pred and target must be NCHW tensors of equal shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    height, width = pred.shape[-2:]
    if shave < 0 or 2 * shave >= min(height, width):
        raise ValueError(f"shave={shave} must be >= 0 and leave pixels of a {height}x{width} image")
    pred, target = to_unit_range(pred, data_range, "pred"), to_unit_range(target, data_range, "target")
    if y_channel:
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    if shave:
        pred, target = pred[..., shave:-shave, shave:-shave], target[..., shave:-shave, shave:-shave]
    return pred, target


def psnr(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: DataRange,
    y_channel: bool = False,
    shave: int = 0,
) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: 10 log10(1 / MSE) on images mapped to [0, 1].

    `y_channel` scores the BT.601 luma only, `shave` drops that many border pixels (the SR convention is
    shave = scale). Identical images give +inf.
    """
    pred, target = _prepare_pair(pred, target, data_range, y_channel, shave)
    return peak_signal_noise_ratio(pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)).float()


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    """(channels, 1, size, size) normalised Gaussian window for a grouped convolution."""
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    profile = torch.exp(-(offsets**2) / (2 * sigma**2))
    window = profile[:, None] * profile[None, :]
    return (window / window.sum()).expand(channels, 1, size, size)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: DataRange,
    y_channel: bool = False,
    shave: int = 0,
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004): 11x11 Gaussian window with sigma 1.5,
    K1 = 0.01, K2 = 0.03, averaged over the positions where the window fits and over channels.

    Written here rather than taken from torchmetrics: its SSIM reflect-pads the image and averages the
    padded border too, while the reference implementation (and the published SR numbers) use only the
    'valid' positions; the two differ by ~1e-3.
    """
    pred, target = _prepare_pair(pred, target, data_range, y_channel, shave)
    if min(pred.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} after shave, got "
            f"{tuple(pred.shape[-2:])}"
        )
    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, pred.shape[1], pred)
    local_mean = lambda x: F.conv2d(x, window, groups=pred.shape[1])  # 'valid' positions only
    mu_pred, mu_target = local_mean(pred), local_mean(target)
    var_pred = local_mean(pred * pred) - mu_pred**2
    var_target = local_mean(target * target) - mu_target**2
    covariance = local_mean(pred * target) - mu_pred * mu_target
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2  # Wang et al. 2004, eq. 7 and 9 with L = 1 ([0, 1] images)
    # Wang et al. 2004, eq. 13
    ssim_map = ((2 * mu_pred * mu_target + c1) * (2 * covariance + c2)) / (
        (mu_pred**2 + mu_target**2 + c1) * (var_pred + var_target + c2)
    )
    return ssim_map.mean(dim=(1, 2, 3)).float()


def downsample(images: torch.Tensor, scale: int, method: str = "bicubic") -> torch.Tensor:
    """Shrink NCHW images by an integer `scale`: antialiased 'bicubic' (a = -0.5, like MATLAB's imresize
    and PIL) or 'bilinear', or 'area' (mean of each scale x scale block)."""
    if method == "area":
        return F.avg_pool2d(images, kernel_size=scale)
    if method not in ("bicubic", "bilinear"):
        raise ValueError(f"downsample method must be 'bicubic', 'bilinear' or 'area', got {method!r}")
    size = (images.shape[-2] // scale, images.shape[-1] // scale)
    return F.interpolate(images, size=size, mode=method, align_corners=False, antialias=True)


def sr_consistency(
    sr: torch.Tensor, lr: torch.Tensor, scale: int, method: str | Downsampler = "bicubic"
) -> torch.Tensor:
    """SR3's consistency (Saharia et al. 2021, Sec. 5.1): MSE between the downsampled output and the
    low-resolution input, per image, on [0, 1] pixel values.

    `sr` and `lr` are in [-1, 1]; `method` names a `downsample` method or is a callable (images, scale) ->
    images, ideally the degradation that made `lr`.
    """
    expected = (lr.shape[-2] * scale, lr.shape[-1] * scale)
    if tuple(sr.shape[-2:]) != expected or sr.shape[:2] != lr.shape[:2]:
        raise ValueError(
            f"sr {tuple(sr.shape)} must be lr {tuple(lr.shape)} enlarged by scale={scale} (H, W = {expected})"
        )
    shrink = method if callable(method) else lambda images, factor: downsample(images, factor, method)
    sr_unit = to_unit_range(sr.float(), (-1.0, 1.0), "sr")
    lr_unit = to_unit_range(lr.float(), (-1.0, 1.0), "lr")
    return (shrink(sr_unit, scale) - lr_unit).pow(2).mean(dim=(1, 2, 3)).float()


def fidelity_scores(
    samples: torch.Tensor,
    target: torch.Tensor,
    *,
    shave: int = 0,
    y_channel: bool = False,
    metrics: Sequence[str] = ("psnr", "ssim"),
) -> dict[str, torch.Tensor]:
    """Per-image `metrics` (psnr, ssim) of samples against target, both in [-1, 1], with `shave` border
    pixels dropped: the one "score samples against hr" of the callbacks, `evaluate` and DDRM. A metric the
    image is too small for is left out (PSNR needs a pixel after the shave, SSIM its 11-pixel window)."""
    kept = min(target.shape[-2:]) - 2 * shave
    scores = {}
    if "psnr" in metrics and kept > 0:
        scores["psnr"] = psnr(samples, target, (-1.0, 1.0), y_channel=y_channel, shave=shave)
    if "ssim" in metrics and kept >= SSIM_WINDOW:
        scores["ssim"] = ssim(samples, target, (-1.0, 1.0), y_channel=y_channel, shave=shave)
    return scores
