"""Albumentations 2.x pipelines for uint8 (H, W, 3) images.

Every transform is built with `strict=True`: albumentations 2.x otherwise ignores a misspelled
argument silently.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
from PIL import Image

from lit_diffsr.errors import ConfigError

SMALL_IMAGE_POLICIES = ("upscale", "error")


class SmallImageError(ConfigError):
    """An image is smaller than the crop and the policy is small_image='error'."""


def fit_small_image(image: np.ndarray, crop_size: int, policy: str, source: str | Path) -> np.ndarray:
    """Make sure both sides of `image` are at least `crop_size`.

    policy "upscale": a smaller image is resized up (bicubic, aspect ratio kept) so its short side
    equals `crop_size`; "error": a smaller image raises SmallImageError naming `source`.
    """
    if policy not in SMALL_IMAGE_POLICIES:
        raise ConfigError(f"small_image must be one of {SMALL_IMAGE_POLICIES}, got {policy!r}")
    height, width = image.shape[:2]
    if min(height, width) >= crop_size:
        return image
    if policy == "error":
        raise SmallImageError(
            f"image {str(source)!r} is {height}x{width}, smaller than the crop size {crop_size}; "
            f"remove it, lower the resolution, or set small_image='upscale'"
        )
    factor = crop_size / min(height, width)
    new_size = (max(crop_size, round(width * factor)), max(crop_size, round(height * factor)))
    return np.asarray(Image.fromarray(image).resize(new_size, Image.Resampling.BICUBIC))


class CropTransform:
    """Resize (short side) -> crop (random for training, centred otherwise) -> horizontal flip.

    With `resize=False` crops are taken at native resolution (SR patches from large images).
    Randomness is reseeded per call from the given generator, so an item is a pure function of
    its seed, whatever the worker that loads it.
    """

    def __init__(self, crop_size: int, train: bool, resize: bool = True, random_flip: bool = True):
        if crop_size < 1:
            raise ConfigError(f"crop_size must be a positive integer, got {crop_size}")
        self.crop_size = crop_size
        steps: list[A.BasicTransform] = []
        if resize:  # INTER_AREA: anti-aliased when shrinking (ADM's ImageNet preprocessing also box-filters)
            steps.append(
                A.SmallestMaxSize(max_size=crop_size, interpolation=cv2.INTER_AREA, p=1.0, strict=True)
            )
        crop = A.RandomCrop if train else A.CenterCrop
        steps.append(crop(height=crop_size, width=crop_size, p=1.0, strict=True))
        if train and random_flip:
            steps.append(A.HorizontalFlip(p=0.5, strict=True))
        self.pipeline = A.Compose(steps, strict=True)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        self.pipeline.set_random_seed(int(rng.integers(2**31)))
        return self.pipeline(image=image)["image"]


class PairAugmentation:
    """One of the 8 flips / 90-degree rotations (the dihedral group D4), applied identically to an
    HR crop and its LR crop (`additional_targets`; shapes differ by the scale, hence no shape check)."""

    def __init__(self) -> None:
        self.pipeline = A.Compose(
            [A.D4(p=1.0, strict=True)], additional_targets={"lr": "image"}, is_check_shapes=False, strict=True
        )

    def __call__(
        self, hr: np.ndarray, lr: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        self.pipeline.set_random_seed(int(rng.integers(2**31)))
        output = self.pipeline(image=hr, lr=lr)
        return output["image"], output["lr"]
