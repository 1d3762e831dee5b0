"""Degradations that turn a clean image x into an observation y (super-resolution, deblurring,
denoising, JPEG restoration, inpainting), applied on the fly to HR crops.

Images here are float32 numpy arrays (H, W, C) in [-1, 1]; masks are float32 (H, W) with
1 = observed and 0 = missing. Randomness comes only from the `numpy.random.Generator` passed in,
so a degradation is reproducible from its seed.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from lit_diffsr.errors import ConfigError

DOWNSAMPLE_METHODS = ("bicubic", "area", "box")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> [0, 255] uint8 (rounded)."""
    return np.rint((np.clip(image, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def from_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 255] uint8 -> [-1, 1] float32."""
    return image.astype(np.float32) / 127.5 - 1.0


# --------------------------------------------------------------------------- resampling


def _keys_cubic(distance: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Cubic convolution kernel W(d) of Keys (1981, IEEE TASSP 29(6)); a = -1/2, the value PIL and
    MATLAB use, is the one that makes the interpolation third-order accurate."""
    d = np.abs(distance)
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0  # |d| <= 1
    far = ((d - 5.0) * d + 8.0) * d * a - 4.0 * a  # 1 < |d| < 2
    return np.where(d <= 1.0, near, np.where(d < 2.0, far, 0.0))


def _antialiased_cubic_weights(in_size: int, scale: int) -> np.ndarray:
    """(in_size // scale, in_size) resampling matrix: the cubic kernel stretched by `scale` so it
    low-passes before decimating (anti-aliasing), truncated at the image border and renormalised."""
    out_centres = (np.arange(in_size // scale) + 0.5) * scale  # output pixel centres, input coordinates
    in_centres = np.arange(in_size) + 0.5
    weights = _keys_cubic((in_centres[None, :] - out_centres[:, None]) / scale)
    return weights / weights.sum(axis=1, keepdims=True)


def _check_divisible(image: np.ndarray, scale: int) -> None:
    height, width = image.shape[:2]
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ConfigError(f"downsample scale must be a positive integer, got {scale!r}")
    if height % scale or width % scale:
        raise ConfigError(
            f"image size {height}x{width} is not divisible by the downsample scale {scale}; "
            f"crop it to a multiple of {scale} first (e.g. a crop size divisible by the scale)"
        )


def downsample(image: np.ndarray, scale: int, method: str = "bicubic") -> np.ndarray:
    """Reduce an (H, W, C) image in [-1, 1] by an integer factor r to (H/r, W/r, C).

    "bicubic" is the anti-aliased cubic resampling of PIL's `Image.resize(..., BICUBIC)`
    (MATLAB's imresize too, except at the borders, where PIL truncates and renormalises the
    kernel and MATLAB mirrors the image): separable, horizontal pass first, clipped to [-1, 1]
    after each pass as PIL's 8-bit path does. "area" and "box" are the same operator for integer
    factors: the mean of each r x r block (OpenCV INTER_AREA and PIL BOX both reduce to it).
    """
    _check_divisible(image, scale)
    if method not in DOWNSAMPLE_METHODS:
        raise ConfigError(f"unknown downsample method {method!r}; allowed: {', '.join(DOWNSAMPLE_METHODS)}")
    height, width, channels = image.shape
    if method in ("area", "box"):
        blocks = image.reshape(height // scale, scale, width // scale, scale, channels)
        return blocks.mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    row_weights = _antialiased_cubic_weights(width, scale)
    column_weights = _antialiased_cubic_weights(height, scale)
    horizontal = np.clip(np.einsum("ow,hwc->hoc", row_weights, image.astype(np.float64)), -1.0, 1.0)
    vertical = np.clip(np.einsum("oh,hwc->owc", column_weights, horizontal), -1.0, 1.0)
    return vertical.astype(np.float32)


# --------------------------------------------------------------------------- blur, noise, JPEG


def _filter_separable(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Correlate rows and columns with the same odd-length 1-D kernel; mirror padding
    (border pixel not repeated, OpenCV's BORDER_REFLECT_101) keeps the size."""
    radius = len(taps) // 2
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    height, width = image.shape[:2]
    columns = sum(tap * padded[i : i + height] for i, tap in enumerate(taps))
    filtered = sum(tap * columns[:, i : i + width] for i, tap in enumerate(taps))
    return filtered.astype(np.float32)


def _check_odd_size(name: str, size: int, image: np.ndarray) -> None:
    if not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ConfigError(f"{name} must be a positive odd integer, got {size!r}")
    if size // 2 >= min(image.shape[:2]):
        height, width = image.shape[:2]
        raise ConfigError(f"{name}={size} is too large for an image of size {height}x{width}")


def gaussian_blur(image: np.ndarray, sigma: float, kernel_size: int | None = None) -> np.ndarray:
    """Blur with the isotropic Gaussian k(x) ∝ exp(-x² / 2σ²), truncated to `kernel_size` taps
    (default 2·ceil(3σ) + 1, which keeps 99.7 % of the mass) and renormalised."""
    if sigma <= 0:
        raise ConfigError(f"gaussian_blur sigma must be > 0, got {sigma}")
    kernel_size = 2 * math.ceil(3 * sigma) + 1 if kernel_size is None else kernel_size
    _check_odd_size("gaussian_blur kernel_size", kernel_size, image)
    offsets = np.arange(kernel_size) - kernel_size // 2
    taps = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return _filter_separable(image, taps / taps.sum())


def uniform_blur(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window (DDRM's uniform deblurring uses 9 x 9, Kawar et al. 2022)."""
    _check_odd_size("uniform_blur size", size, image)
    return _filter_separable(image, np.full(size, 1.0 / size))


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator, clip: bool = True) -> np.ndarray:
    """y = x + σ·n with n ~ N(0, I); σ is in [-1, 1] image units (σ = 2/255 is one 8-bit level)."""
    if sigma < 0:
        raise ConfigError(f"noise sigma must be >= 0, got {sigma}")
    noisy = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(noisy, -1.0, 1.0) if clip else noisy


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round trip through an 8-bit JPEG file (PIL encoder, 4:2:0 chroma subsampling) at `quality`."""
    if not 1 <= quality <= 100:
        raise ConfigError(f"jpeg quality must be in [1, 100], got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return from_uint8(np.asarray(decoded.convert("RGB")))


# --------------------------------------------------------------------------- inpainting masks


def center_box_mask(height: int, width: int, fraction: float = 0.5) -> np.ndarray:
    """Mask hiding a centred box whose sides are `fraction` of the image sides (fraction 0.5 hides
    a quarter of the area, the "center" mask of I²SB / Palette). 1 = observed, 0 = missing."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"center mask fraction must be in (0, 1), got {fraction}")
    box_height, box_width = round(height * fraction), round(width * fraction)
    top, left = (height - box_height) // 2, (width - box_width) // 2
    mask = np.ones((height, width), dtype=np.float32)
    mask[top : top + box_height, left : left + box_width] = 0.0
    return mask


def _brush_stroke(height: int, width: int, size_scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random polyline with round joints, as a boolean (H, W) array of covered pixels."""
    short_side = min(height, width)
    stroke_width = max(1, round(rng.uniform(0.03, 0.1) * short_side * size_scale))
    points = [(rng.uniform(0, width), rng.uniform(0, height))]
    for _ in range(rng.integers(1, 6)):
        angle = rng.uniform(0.0, 2.0 * math.pi)
        length = rng.uniform(0.05, 0.3) * short_side * size_scale
        x, y = points[-1]
        points.append(
            (
                float(np.clip(x + length * math.cos(angle), 0, width - 1)),
                float(np.clip(y + length * math.sin(angle), 0, height - 1)),
            )
        )
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).line(points, fill=1, width=stroke_width, joint="curve")
    return np.asarray(canvas, dtype=bool)


def freeform_mask(
    height: int,
    width: int,
    coverage: tuple[float, float] = (0.1, 0.3),
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Free-form mask of random brush strokes (as in Palette / I²SB "freeform" masks) whose missing
    fraction lies in [coverage[0], coverage[1]]: strokes are added until a target drawn uniformly
    in that range is reached; a stroke that would overshoot the upper bound is redrawn smaller."""
    low, high = coverage
    if not 0.0 <= low <= high < 1.0:
        raise ConfigError(f"freeform mask coverage must satisfy 0 <= low <= high < 1, got {coverage}")
    rng = np.random.default_rng() if rng is None else rng
    target = rng.uniform(low, high)
    missing = np.zeros((height, width), dtype=bool)
    size_scale = 1.0
    for _ in range(10_000):
        if missing.mean() >= target:
            return (~missing).astype(np.float32)
        candidate = missing | _brush_stroke(height, width, size_scale, rng)
        if candidate.mean() <= high:
            missing = candidate
        else:
            size_scale = max(size_scale / 2.0, 1e-3)
    raise RuntimeError(f"could not reach freeform mask coverage {coverage} on a {height}x{width} image")


# --------------------------------------------------------------------------- pipeline


@dataclass
class Degraded:
    """Result of a Degradation: the observation y, its mask (or None) and the steps that ran."""

    image: np.ndarray
    mask: np.ndarray | None = None
    applied: list[dict[str, Any]] = field(default_factory=list)


# Parameters of each step type; those in _RANGE_KEYS may also be given as [low, high] (uniform).
_STEP_KEYS: dict[str, tuple[str, ...]] = {
    "gaussian_blur": ("sigma", "kernel_size"),
    "uniform_blur": ("size",),
    "downsample": ("scale", "method"),
    "noise": ("sigma", "clip"),
    "jpeg": ("quality",),
    "mask": ("kind", "coverage", "fraction", "fill"),
}
_REQUIRED_KEYS = {
    "gaussian_blur": ("sigma",),
    "uniform_blur": ("size",),
    "downsample": ("scale",),
    "noise": ("sigma",),
    "jpeg": ("quality",),
    "mask": ("kind",),
}
_RANGE_KEYS = {"sigma": float, "quality": int}
_COMMON_KEYS = ("type", "prob")
MASK_KINDS = ("freeform", "center")


def _is_range(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _sample(value: Any, cast: type, rng: np.random.Generator) -> Any:
    if not _is_range(value):
        return cast(value)
    low, high = value
    return int(rng.integers(low, high + 1)) if cast is int else float(rng.uniform(low, high))


def _apply_mask(image: np.ndarray, params: dict[str, Any], rng: np.random.Generator) -> Degraded:
    height, width = image.shape[:2]
    if params["kind"] == "center":
        mask = center_box_mask(height, width, params.get("fraction", 0.5))
    else:
        mask = freeform_mask(height, width, tuple(params.get("coverage", (0.1, 0.3))), rng)
    fill = params.get("fill", 0.0)
    return Degraded(image * mask[:, :, None] + fill * (1.0 - mask[:, :, None]), mask)


_APPLY: dict[str, Callable[[np.ndarray, dict[str, Any], np.random.Generator], np.ndarray | Degraded]] = {
    "gaussian_blur": lambda image, p, rng: gaussian_blur(image, p["sigma"], p.get("kernel_size")),
    "uniform_blur": lambda image, p, rng: uniform_blur(image, p["size"]),
    "downsample": lambda image, p, rng: downsample(image, p["scale"], p.get("method", "bicubic")),
    "noise": lambda image, p, rng: add_noise(image, p["sigma"], rng, p.get("clip", True)),
    "jpeg": lambda image, p, rng: jpeg(image, p["quality"]),
    "mask": _apply_mask,
}


class Degradation:
    """A sequence of degradation steps, each a dict such as
    ``{"type": "gaussian_blur", "sigma": [0.4, 0.6], "kernel_size": 3, "prob": 0.5}``.

    A two-element list for `sigma` or `quality` is a uniform range sampled per image; `prob` is the
    chance a step runs (default 1). Step types and their keys: see `_STEP_KEYS`. `scale` is the
    product of the downsample factors, i.e. y is `scale` times smaller than x.
    """

    def __init__(self, steps: Sequence[Mapping[str, Any]]):
        self.steps = [self._validate(dict(step), position) for position, step in enumerate(steps)]
        self.scale = math.prod(step["scale"] for step in self.steps if step["type"] == "downsample")
        kinds = [step["type"] for step in self.steps]
        self.has_mask = "mask" in kinds
        if self.has_mask and "downsample" in kinds[kinds.index("mask") :]:
            raise ConfigError(
                "a downsample degradation step cannot follow a mask step (the mask would no longer "
                "match the image size); put the mask step after the downsample"
            )

    @staticmethod
    def _validate(step: dict[str, Any], position: int) -> dict[str, Any]:
        where = f"degradation step {position}"
        kind = step.get("type")
        if kind not in _STEP_KEYS:
            raise ConfigError(f"{where}: unknown type {kind!r}; allowed types: {', '.join(_STEP_KEYS)}")
        allowed = _COMMON_KEYS + _STEP_KEYS[kind]
        for key, value in step.items():
            if key not in allowed:
                allowed_keys = ", ".join(allowed)
                raise ConfigError(f"{where} ({kind}): unknown key {key!r}; allowed keys: {allowed_keys}")
            if _is_range(value) and key != "coverage" and (key not in _RANGE_KEYS or len(value) != 2):
                raise ConfigError(
                    f"{where} ({kind}): {key!r} takes a single value, got {list(value)}; "
                    f"only {', '.join(_RANGE_KEYS)} accept a [low, high] range"
                )
        for key in _REQUIRED_KEYS[kind]:
            if key not in step:
                raise ConfigError(f"{where} ({kind}): missing required key {key!r}")
        step["prob"] = float(step.get("prob", 1.0))
        if not 0.0 <= step["prob"] <= 1.0:
            raise ConfigError(f"{where} ({kind}): prob must be in [0, 1], got {step['prob']}")
        if kind == "downsample" and step["prob"] != 1.0:
            raise ConfigError(
                f"{where}: 'prob' is not allowed for downsample, the observation size must be fixed"
            )
        if kind == "downsample" and step.get("method", "bicubic") not in DOWNSAMPLE_METHODS:
            raise ConfigError(
                f"{where}: unknown method {step['method']!r}; allowed: {', '.join(DOWNSAMPLE_METHODS)}"
            )
        if kind == "mask" and step["kind"] not in MASK_KINDS:
            kinds = ", ".join(MASK_KINDS)
            raise ConfigError(f"{where}: unknown mask kind {step['kind']!r}; allowed: {kinds}")
        return step

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> Degraded:
        """Degrade an (H, W, C) float image in [-1, 1]; the mask (if any) matches y's size."""
        result = Degraded(image)
        for step in self.steps:
            if step["prob"] < 1.0 and rng.random() >= step["prob"]:
                continue
            params = {
                key: _sample(value, _RANGE_KEYS[key], rng) if key in _RANGE_KEYS else value
                for key, value in step.items()
            }
            output = _APPLY[step["type"]](result.image, params, rng)
            if isinstance(output, Degraded):  # a mask step; masks from several steps combine
                mask = output.mask if result.mask is None else result.mask * output.mask
                result = Degraded(output.image, mask, result.applied)
            else:
                result.image = output
            result.applied.append(params)
        if result.mask is None and self.has_mask:  # the mask step was skipped by its prob
            result.mask = np.ones(result.image.shape[:2], dtype=np.float32)
        result.image = result.image.astype(np.float32)
        return result

    def __repr__(self) -> str:
        return f"Degradation({self.steps!r})"
