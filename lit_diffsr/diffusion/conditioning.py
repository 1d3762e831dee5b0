"""Conditioning augmentation of the low-resolution input of a cascade stage (Ho et al. 2022, CDM §4.2).

Two corruptions, both applied to the conditioning image only, never to the target:
- Gaussian blur (the 64 -> 256 stage): a small random blur on a fraction of the training examples.
- Gaussian noise with the forward process of the low-resolution model: z_s ~ q(z_s | z_0 = lr), with the
  level s given to the network. s = 0 means no augmentation; s >= 1 is the process's 0-indexed step
  s - 1 (``GaussianDiffusion``: step 0 is one step of noise), so levels run 0..T.
  At sampling, *truncated* augmentation stops the low-resolution chain at z_s; *non-truncated* runs it
  to z_0 and re-noises it with q(z_s | z_0). Either way the stage receives (z_s, s).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lit_diffsr.diffusion.gaussian_diffusion import GaussianDiffusion
from lit_diffsr.diffusion.on_device import DeviceTables, draw_device, precise_dtype


def _uniform(
    count: int, low: float, high: float, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """U[low, high] draws on `device` (drawn on the generator's device when one is given)."""
    where = draw_device(device, generator)
    return (low + (high - low) * torch.rand(count, generator=generator, device=where)).to(device)


def gaussian_kernels(sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """(B, kernel_size) normalised 1-D Gaussian taps exp(-x^2 / (2 sigma^2)), one row per sigma."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"gaussian_kernels: kernel_size must be a positive odd number, got {kernel_size}")
    dtype = precise_dtype(sigmas.device)
    offsets = torch.arange(kernel_size, dtype=dtype, device=sigmas.device) - kernel_size // 2
    taps = torch.exp(-(offsets[None] ** 2) / (2 * sigmas.to(dtype)[:, None] ** 2))
    return taps / taps.sum(dim=1, keepdim=True)


def blur_augmentation(
    images: torch.Tensor,
    probability: float = 0.5,
    sigma_range: Sequence[float] = (0.4, 0.6),
    kernel_size: int = 3,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blur each image with probability ``probability`` by a separable Gaussian of sigma ~ U[sigma_range].

    CDM §4.2 (64 -> 256 stage): kernel size 3, sigma in [0.4, 0.6], 50% of the training examples.
    Borders are reflected, so a constant image stays constant.

    Args:
        images: (B, C, H, W) conditioning images.
        generator: for reproducible choices (drawn on its device).

    Returns:
        (augmented images, applied (B,) bool, sigmas (B,) — the sigma drawn for every image, applied or not).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"blur_augmentation: probability must lie in [0, 1], got {probability}")
    low, high = (float(v) for v in sigma_range)
    if not 0 < low <= high:
        raise ValueError(
            f"blur_augmentation: sigma_range must be (low, high) with 0 < low <= high, got "
            f"{tuple(sigma_range)}"
        )
    batch, channels, height, width = images.shape
    applied = _uniform(batch, 0.0, 1.0, images.device, generator) < probability
    sigmas = _uniform(batch, low, high, images.device, generator)
    taps = gaussian_kernels(sigmas, kernel_size).to(images)
    # Per-image kernels as a grouped convolution over the (B * C) channels: rows, then columns.
    taps = taps.repeat_interleave(channels, dim=0)
    pad = kernel_size // 2
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.conv2d(
        F.pad(flat, (pad, pad, 0, 0), mode="reflect"), taps[:, None, None, :], groups=batch * channels
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, pad, pad), mode="reflect"), taps[:, None, :, None], groups=batch * channels
    )
    blurred = flat.reshape(batch, channels, height, width)
    return torch.where(applied[:, None, None, None], blurred, images), applied, sigmas


class NoiseAugmentation:
    """z_s ~ q(z_s | z_0) under the low-resolution model's forward process, for levels s in 0..max_level.

    Args:
        betas: the low-resolution model's training schedule (its T steps).
        max_level: the largest level drawn at training (default T); training draws s ~ U{0..max_level},
            amortising over the augmentation strength that is chosen after training (CDM §4.2).
    """

    def __init__(self, betas: np.ndarray | Sequence[float], max_level: int | None = None) -> None:
        self.process = GaussianDiffusion(betas)
        self.num_timesteps = self.process.num_timesteps
        self.max_level = self.num_timesteps if max_level is None else int(max_level)
        self._tables = DeviceTables()
        if not 0 <= self.max_level <= self.num_timesteps:
            raise ValueError(
                f"NoiseAugmentation: max_level={max_level} must lie in [0, T={self.num_timesteps}]"
            )

    def check_level(self, level: int) -> int:
        if not 0 <= int(level) <= self.num_timesteps:
            raise ValueError(
                f"augmentation level {level} must lie in [0, T={self.num_timesteps}] "
                "(0 = no augmentation, s = step s - 1 of the low-resolution process)"
            )
        return int(level)

    def sample_levels(
        self, batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """s ~ U{0..max_level} per example, (B,) long."""
        where = draw_device(device, generator)
        return torch.randint(self.max_level + 1, (batch_size,), generator=generator, device=where).to(device)

    def mean_std(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_{s-1}), sqrt(1 - abar_{s-1})) per level, (1, 0) at s = 0: (B,) float64, on the
        levels' device."""
        levels = levels.long()
        step = (levels - 1).clamp(min=0)
        device, dtype = levels.device, precise_dtype(levels.device)
        mean = self._tables.get("mean", self.process.sqrt_alphas_cumprod, device, dtype)[step]
        std = self._tables.get("std", self.process.sqrt_one_minus_alphas_cumprod, device, dtype)[step]
        none = levels == 0
        return torch.where(none, 1.0, mean), torch.where(none, 0.0, std)

    def apply(
        self, z0: torch.Tensor, levels: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """z_s = sqrt(abar_{s-1}) z_0 + sqrt(1 - abar_{s-1}) eps, z_0 itself where s = 0 (Ho et al. 2020,
        eq. 4, applied to the conditioning image as in CDM §4.2)."""
        if noise is None:
            noise = torch.randn_like(z0)
        mean, std = (v.to(z0).reshape(-1, *([1] * (z0.ndim - 1))) for v in self.mean_std(levels))
        return mean * z0 + std * noise
