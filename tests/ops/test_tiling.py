"""Tiled inference: tile placement, exact blending for tile-wise functions, one tile = no tiling."""

import pytest
import torch
import torch.nn.functional as F

from lit_diffsr.ops.tiling import blend_window, tile_starts, tiled_apply


@pytest.mark.parametrize(("size", "tile", "overlap"), [(50, 16, 4), (64, 16, 0), (17, 16, 8), (16, 16, 2)])
def test_tiles_cover_the_image_with_the_requested_overlap(size, tile, overlap):
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == size
    assert all(later - earlier <= tile - overlap for earlier, later in zip(starts, starts[1:], strict=False))


def test_a_small_side_gives_one_tile():
    assert tile_starts(10, 16, 4) == [0]


def test_blend_window_is_positive_and_feathers_over_the_ramp():
    window = blend_window(12, 16, ramp=4)
    assert window.shape == (12, 16) and bool((window > 0).all())
    assert float(window[6, 8]) == 1.0 and float(window[0, 0]) == pytest.approx((0.5 / 4) ** 2)
    assert torch.equal(blend_window(3, 3, ramp=0), torch.ones(3, 3))


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_pointwise_functions_are_reproduced_exactly(scale):
    # A function whose output pixel depends on its own input pixel only is the same on every tile, so the
    # weighted mean of overlapping tiles gives it back exactly (up to float rounding of the weights).
    torch.manual_seed(0)
    image = torch.rand(2, 3, 37, 29)

    def function(x):
        return F.interpolate(2 * x - 1, scale_factor=scale, mode="nearest")

    tiled = tiled_apply(function, image, tile_size=12, overlap=4, scale=scale)
    torch.testing.assert_close(tiled, function(image), rtol=0, atol=1e-6)


def test_one_tile_reproduces_the_untiled_output():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16)
    conv = torch.nn.Conv2d(3, 3, 5, padding=2)  # not pointwise: only a single tile can be exact

    def function(x):
        return F.interpolate(conv(x), scale_factor=2, mode="bilinear")

    with torch.no_grad():
        # x * w / w in float32: equal to rounding (1e-6).
        tiled = tiled_apply(function, image, 16, 4, scale=2)
        torch.testing.assert_close(tiled, function(image), rtol=0, atol=1e-6)


def test_seams_are_blended_between_tiles():
    # Tiles that return their own constant: the overlap holds a mix, not a jump from one value to the next.
    image = torch.zeros(1, 1, 1, 24)
    values = iter([0.0, 1.0])
    out = tiled_apply(lambda x: torch.full_like(x, next(values)), image, tile_size=16, overlap=8)
    row = out[0, 0, 0]
    assert float(row[0]) == 0.0 and float(row[-1]) == 1.0
    steps = row.diff()
    assert bool((steps >= 0).all()) and float(steps.max()) < 0.2  # monotone ramp, no seam jump


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(32, 8, 8)
    with pytest.raises(ValueError, match="expected"):
        tiled_apply(lambda x: x, torch.zeros(1, 1, 8, 8), 4, 1, scale=2)
    with pytest.raises(ValueError, match="B, C, H, W"):
        tiled_apply(lambda x: x, torch.zeros(8, 8), 4, 1)
