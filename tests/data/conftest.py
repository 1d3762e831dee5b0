"""Shared helpers for the data tests: small image files written with PIL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth-ish random uint8 RGB image (noise plus a gradient, so crops differ from each other)."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 160, width)[None, :, None] + np.linspace(0, 60, height)[:, None, None]
    return np.clip(gradient + rng.integers(0, 90, (height, width, 3)), 0, 255).astype(np.uint8)


def write_image(path: Path, image: np.ndarray, **save_options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, **save_options)
    return path


@pytest.fixture
def make_class_folders(tmp_path: Path) -> Callable[..., Path]:
    """root/<class>/img_k.png with `per_class` images of size `size` for each class name."""

    def make(classes=("cat", "dog"), per_class: int = 3, size=(40, 48), root: Path | None = None) -> Path:
        root = root or tmp_path / "images"
        for label, name in enumerate(classes):
            for k in range(per_class):
                write_image(root / name / f"{name}_{k}.png", random_rgb(*size, seed=10 * label + k))
        return root

    return make


@pytest.fixture(name="random_rgb")
def random_rgb_fixture() -> Callable[..., np.ndarray]:
    return random_rgb


@pytest.fixture(name="write_image")
def write_image_fixture() -> Callable[..., Path]:
    return write_image
