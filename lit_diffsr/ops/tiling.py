"""Tiled inference: apply an image-to-image function to overlapping tiles and blend the seams.

For inputs larger than a model's training crop (LDM-SR on whole images): the input is cut into tiles of
`tile_size` pixels that overlap by `overlap` pixels, the function maps each tile to an output tile `scale`
times larger, and every output pixel is the weighted mean of the tiles covering it. Each tile's weight falls
linearly to the tile's border over the overlap (a feathered window), so seams fade from one tile into the
next instead of cutting (the idea of tiled diffusion SR such as StableSR's aggregation, Wang et al. 2024,
with a linear instead of a Gaussian window).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(size: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile_size` covering [0, size), consecutive tiles overlapping by at least
    `overlap`; the last tile ends exactly at `size`. A size not above the tile size gives one tile."""
    if tile_size <= 0 or not 0 <= overlap < tile_size:
        raise ValueError(f"need tile_size > 0 and 0 <= overlap < tile_size, got {tile_size} and {overlap}")
    if size <= tile_size:
        return [0]
    stride = tile_size - overlap
    starts = list(range(0, size - tile_size, stride))
    return starts + [size - tile_size]


def blend_window(height: int, width: int, ramp: int) -> torch.Tensor:
    """(height, width) weights w(i, j) = r(i) r(j), r = (distance to the border + 0.5) / ramp, capped at 1.

    Separable, so a factor that is constant along one axis cancels in the normalisation; strictly positive,
    so every pixel has weight; uniform when ramp <= 0."""
    if ramp <= 0:
        return torch.ones(height, width)

    def profile(length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.float32) + 0.5
        return torch.minimum(position, length - position).div(ramp).clamp(max=1.0)

    return profile(height)[:, None] * profile(width)[None, :]


def tiled_apply(
    function: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile_size: int,
    overlap: int,
    scale: int = 1,
) -> torch.Tensor:
    """function(image) computed tile by tile: output = sum_k w_k * function(tile_k) / sum_k w_k.

    Args:
        function: maps (B, C, h, w) tiles to (B, C', scale h, scale w).
        image: (B, C, H, W) input.
        tile_size: tile side in input pixels (smaller sides of the image give smaller tiles).
        overlap: overlap of neighbouring tiles in input pixels; the blending ramp spans it.
        scale: output size / input size.
    """
    if image.ndim != 4:
        raise ValueError(f"tiled_apply: image must be (B, C, H, W), got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    output = weights = None
    for top in tile_starts(height, tile_size, overlap):
        for left in tile_starts(width, tile_size, overlap):
            tile = image[..., top : top + tile_size, left : left + tile_size]
            result = function(tile)
            expected = (tile.shape[-2] * scale, tile.shape[-1] * scale)
            if tuple(result.shape[-2:]) != expected:
                raise ValueError(
                    f"tiled_apply: function mapped a {tuple(tile.shape[-2:])} tile to "
                    f"{tuple(result.shape[-2:])}, "
                    f"expected {expected} (scale={scale})"
                )
            if output is None:
                output = result.new_zeros(*result.shape[:2], height * scale, width * scale)
                weights = result.new_zeros(height * scale, width * scale)
            window = blend_window(*expected, overlap * scale).to(result)
            rows = slice(top * scale, top * scale + expected[0])
            columns = slice(left * scale, left * scale + expected[1])
            output[..., rows, columns] += result * window
            weights[rows, columns] += window
    return output / weights
