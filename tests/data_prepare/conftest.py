"""Small source trees built in tmp_path, and a helper that runs a preparation in-process."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lit_diffsr.data.prepare import REPORT_NAME, main


def photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth, photo-like uint8 RGB image (gradients plus mild noise), so resizes are meaningful."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    base = np.stack([np.sin(6 * x + c) + np.cos(5 * y - 2 * c) for c in range(3)], axis=-1)
    noisy = 127.5 + 60 * base + rng.normal(0, 8, size=base.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


class SourceTree:
    """Writes image files under `root`; every image gets different content from one seeded generator."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.rng = np.random.default_rng(seed)

    def image(self, relative: str, width: int = 40, height: int = 30, gray: bool = False) -> Path:
        pixels = photo(self.rng, width, height)
        image = Image.fromarray(pixels).convert("L") if gray else Image.fromarray(pixels)
        return self.save(relative, image)

    def save(self, relative: str, image: Image.Image) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
        return path

    def corrupt(self, relative: str) -> Path:
        """A real JPEG cut in half: the header reads, decoding fails ("image file is truncated")."""
        buffer = io.BytesIO()
        Image.fromarray(photo(self.rng, 64, 48)).save(buffer, format="JPEG")
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        return path


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under `root`: its SHA-256 and modification time (ns)."""
    return {
        str(path.relative_to(root)): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB", f"{path} is {image.mode}, every output must be RGB"
        return np.asarray(image)


@pytest.fixture
def snapshot():
    """snapshot(root) -> {relative path: (sha256, mtime_ns)} of every file under root."""
    return _snapshot


@pytest.fixture
def pixels():
    """pixels(path) -> the uint8 HxWx3 array of an output PNG, asserting that it is RGB."""
    return _pixels


@pytest.fixture
def source(tmp_path: Path) -> SourceTree:
    return SourceTree(tmp_path / "src")


@pytest.fixture
def prepare(tmp_path: Path):
    """Run `python -m lit_diffsr.data.prepare DATASET --src <tmp>/src --dst <tmp>/dst ARGS` in-process.

    Returns (exit status, the dataset's entry of the report or None when no report was written).
    """

    def run(dataset: str, *args: str, workers: int = 1) -> tuple[int, dict | None]:
        dst = tmp_path / "dst"
        status = main(
            [dataset, "--src", str(tmp_path / "src"), "--dst", str(dst), "--workers", str(workers), *args]
        )
        report_path = dst / REPORT_NAME
        return status, json.loads(report_path.read_text())[dataset] if report_path.exists() else None

    return run
