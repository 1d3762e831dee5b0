"""Image files: discovery and decoding to 8-bit RGB arrays (the one place where files are read)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lit_diffsr.errors import UserError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})

# PIL modes that hold one 16- or 32-bit integer channel (16-bit PNG / TIFF greyscale).
_WIDE_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


class ImageReadError(UserError, OSError):
    """An image file could not be decoded; the message names the file."""


class DatasetLayoutError(UserError, FileNotFoundError):
    """A data folder is missing, empty or laid out unexpectedly; the message names the folder."""


def is_image_file(path: Path) -> bool:
    """True for a file whose extension is in IMAGE_EXTENSIONS (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def find_images(root: str | Path, recursive: bool = True) -> list[Path]:
    """All image files under `root` (below sub-folders too when `recursive`), sorted by path.

    Hidden files and folders (names starting with '.') are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(f"image folder {str(root)!r} does not exist or is not a directory")
    candidates = root.rglob("*") if recursive else root.iterdir()
    return sorted(
        path
        for path in candidates
        if path.is_file()
        and is_image_file(path)
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    )


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 RGB of shape (H, W, 3).

    Greyscale becomes three equal channels, transparency is composited on white, 16-bit
    samples are scaled to 8 bits, and the EXIF orientation is applied.
    """
    return _decode(Path(path), str(path))


def decode_rgb(data: bytes | memoryview, source: str) -> np.ndarray:
    """`load_rgb` for the bytes of an image file (e.g. one item of a shard); `source` names it in errors."""
    return _decode(io.BytesIO(data), source)


def _decode(file: Path | BinaryIO, source: str) -> np.ndarray:
    try:
        with Image.open(file) as image:
            image.load()  # decode fully now, so a truncated file fails here and not later
            image = ImageOps.exif_transpose(image)
            return _to_rgb8(image)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"cannot read image {source!r}: {error}") from error


# PIL modes of single-channel files: greyscale stays one channel where a metric convention depends on it.
_GREYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N"})


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file to uint8 (H, W, C): C = 1 for a greyscale file, else 3 (RGB), with the same
    conversions as `load_rgb` (transparency on white, 16 bit to 8, EXIF orientation)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            greyscale = image.mode in _GREYSCALE_MODES
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"cannot read image {str(path)!r}: {error}") from error
    pixels = load_rgb(path)
    return pixels[:, :, :1].copy() if greyscale else pixels  # load_rgb made three equal channels


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise ImageReadError(f"cannot read image {str(path)!r}: {error}") from error
    return height, width


def _to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in _WIDE_INTEGER_MODES:
        # 16-bit range [0, 65535] -> [0, 255]: 65535 / 255 = 257 exactly.
        wide = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise ValueError("floating-point images (PIL mode 'F') are not supported; convert to 8 or 16 bit")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[:, :, 3:] / 255.0
        on_white = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
        return np.rint(on_white).astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
