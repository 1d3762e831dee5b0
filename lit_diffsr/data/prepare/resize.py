"""Resizing used to build the prepared datasets (PIL, 8-bit RGB in and out).

Generation datasets (ImageNet, FFHQ, CelebA-HQ) go through `resize_square`:

1. centre crop to the largest square (offsets floored, as ADM's centre crop);
2. while the side is at least twice the target, halve it with a BOX filter (each output pixel is
   the mean of a 2x2 block);
3. finish with one BICUBIC resize to the target side (PIL's bicubic, a = -0.5, widens its kernel by
   the scale factor when shrinking, so it is anti-aliased; it upsamples sources smaller than the
   target, as ADM does).

Steps 2-3 are the anti-aliased resize of ADM (Dhariwal & Nichol 2021, whose data loader the CDM
paper, Ho et al. 2022, reuses). ADM crops after resizing the short side; cropping first, as here,
gives the same pixels up to a sub-pixel shift of the crop window and never rounds the long side,
so every output is exactly `size` x `size`. We keep the BOX halvings rather than a single bicubic
resize because that is what produced the published ImageNet numbers (the two differ by one or two
grey levels on average; tests/data_prepare checks both facts).

Super-resolution test pairs (Set5, Set14, ...) use `crop_to_multiple` then `bicubic_downscale`:
the usual "modcrop" of the HR to a multiple of the scale, then PIL's anti-aliased bicubic.
"""

from __future__ import annotations

from PIL import Image


def center_crop_square(image: Image.Image) -> Image.Image:
    """The largest centred square of `image` (left/top offsets rounded down)."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Centre crop, then ADM's anti-aliased resize to `size` x `size` (see the module docstring)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    square = center_crop_square(image)
    while square.width >= 2 * size:  # Dhariwal & Nichol 2021 (ADM): repeated 2x BOX downscale
        square = square.resize((square.width // 2, square.height // 2), Image.Resampling.BOX)
    if square.width == size:
        return square
    return square.resize((size, size), Image.Resampling.BICUBIC)


def crop_to_multiple(image: Image.Image, scale: int) -> Image.Image:
    """Drop the right/bottom remainder so both sides are multiples of `scale` (SR "modcrop")."""
    width, height = image.size
    if width < scale or height < scale:
        raise ValueError(f"image of {width}x{height} pixels is smaller than the scale {scale}")
    return image.crop((0, 0, width - width % scale, height - height % scale))


def bicubic_downscale(image: Image.Image, scale: int) -> Image.Image:
    """The LR of a modcropped HR: PIL's anti-aliased bicubic to (width / scale, height / scale)."""
    cropped = crop_to_multiple(image, scale)
    return cropped.resize((cropped.width // scale, cropped.height // scale), Image.Resampling.BICUBIC)
