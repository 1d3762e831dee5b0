"""DDRM degradation operators: parity with the reference numbers, SVD identities, and every H against
its plain definition (F.conv2d, avg_pool2d, channel weights, pixel selection) on colour images."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lit_diffsr.diffusion.ddrm_operators import (
    AnisotropicDeblurring,
    Colorization,
    Deblurring,
    Denoising,
    GeneralH,
    Inpainting,
    SRConv,
    SuperResolution,
    SVDOperator,
    bicubic_kernel,
    gaussian_kernel,
    uniform_kernel,
)

REFERENCE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "reference" / "ddrm_operators.json").read_text())
# The reference ran in float32 (its SVDs too); values are O(1), so float32 rounding through a few
# matrix products stays well below 1e-5.
REFERENCE_ATOL = 1e-5
# Identities checked in float64 on O(1) values: rounding through a few products is ~1e-14.
F64_ATOL = 1e-10


def reference_operator(name: str) -> SVDOperator:
    channels, size = 3, 8  # the reference's x is (2, 3, 8, 8)
    return {
        "Denoising": lambda: Denoising(channels, size),
        "Inpainting": lambda: Inpainting(channels, size,
                                         missing_indices=torch.tensor(REFERENCE["Inpainting"]["missing_indices"])),
        "SuperResolution_r2": lambda: SuperResolution(channels, size, 2),
        "SuperResolution_r4": lambda: SuperResolution(channels, size, 4),
        "Colorization": lambda: Colorization(size),
        "SRConv_bicubic2": lambda: SRConv(torch.tensor(REFERENCE["SRConv_bicubic2"]["kernel"]),
                                          channels, size, 2),
    }[name]()


REFERENCE_NAMES = ["Denoising", "Inpainting", "SuperResolution_r2", "SuperResolution_r4", "Colorization",
                   "SRConv_bicubic2"]


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_every_reference_value(name: str) -> None:
    operator, expected = reference_operator(name), REFERENCE[name]
    x = torch.tensor(REFERENCE["x"])
    y = torch.tensor(expected["y"])
    torch.testing.assert_close(operator.H(x), y, atol=REFERENCE_ATOL, rtol=0)
    # The reference keeps SRConv's singular values in separable (row, column) order; ours are sorted
    # (descending) so that V^T x lists components by singular value for every channel. The multiset matches.
    torch.testing.assert_close(operator.singulars().float(),
                               torch.tensor(expected["singulars"]).sort(descending=True).values,
                               atol=REFERENCE_ATOL, rtol=0)
    for computed, key in ((operator.Ht(y), "Ht_y"), (operator.H_pinv(y), "pinv_y")):
        torch.testing.assert_close(computed, torch.tensor(expected[key]), atol=REFERENCE_ATOL, rtol=0)


def test_bicubic_kernel_matches_reference_kernel() -> None:
    torch.testing.assert_close(bicubic_kernel(2), torch.tensor(REFERENCE["SRConv_bicubic2"]["kernel"],
                                                                dtype=torch.float64), atol=1e-12, rtol=0)
    assert bicubic_kernel(4).sum().item() == pytest.approx(1.0, abs=1e-12)  # a partition of unity


# ------------------------------------------------------------------------- operators vs definitions
def symmetric_pad(x: torch.Tensor, left: int, right: int, dim: int) -> torch.Tensor:
    """Extend x along ``dim`` by mirroring with the edge sample repeated (numpy's "symmetric")."""
    head = x.narrow(dim, 0, left).flip(dim)
    tail = x.narrow(dim, x.shape[dim] - right, right).flip(dim)
    return torch.cat([head, x, tail], dim=dim)


def separable_conv(x: torch.Tensor, kernel_rows: torch.Tensor, kernel_cols: torch.Tensor,
                   stride: int = 1, padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Depthwise F.conv2d (cross-correlation) with the 2-D kernel outer(kernel_rows, kernel_cols)."""
    channels = x.shape[1]
    weight = torch.outer(kernel_rows, kernel_cols).to(x)[None, None].expand(channels, 1, -1, -1)
    return F.conv2d(x, weight, stride=stride, padding=padding, groups=channels)


def blur_same_zero_padding(kernel_rows: torch.Tensor, kernel_cols: torch.Tensor) -> Callable:
    return lambda x: separable_conv(x, kernel_rows, kernel_cols,
                                    padding=(kernel_rows.numel() // 2, kernel_cols.numel() // 2))


def strided_conv_reflect(kernel: torch.Tensor, stride: int) -> Callable:
    """SRConv's stated rule: output o uses x[stride·o + stride//2 - K//2 + m], m = 0..K-1, edge repeated."""
    left = kernel.numel() // 2 - stride // 2
    right = kernel.numel() - stride - left

    def apply(x: torch.Tensor) -> torch.Tensor:
        padded = symmetric_pad(symmetric_pad(x, left, right, 2), left, right, 3)
        return separable_conv(padded, kernel, kernel, stride=stride)

    return apply


def grey(x: torch.Tensor) -> torch.Tensor:
    return (0.3333 * x[:, 0] + 0.3334 * x[:, 1] + 0.3333 * x[:, 2])[:, None]


CHANNELS, HEIGHT, WIDTH = 3, 8, 10  # colour, non-square: rows and columns must not be swapped
# A per-channel (C, H, W) mask, about 60% observed, in a fixed scattered pattern.
INPAINT_MASK = (torch.arange(CHANNELS * HEIGHT * WIDTH) * 7919 % 5 > 1).long().view(CHANNELS, HEIGHT, -1)
ASYMMETRIC_ROWS = torch.tensor([0.1, 0.2, 0.7], dtype=torch.float64)  # not symmetric: flips would show
ASYMMETRIC_COLS = torch.tensor([0.5, 0.3, 0.1, 0.06, 0.04], dtype=torch.float64)
# name -> (operator, H x by its plain definition with F.* on (B, C, H, W), flattened (C, h, w) order).
CASES: dict[str, tuple[Callable[[], SVDOperator], Callable]] = {
    "denoising": (lambda: Denoising(CHANNELS, (HEIGHT, WIDTH)), lambda x: x),
    "inpainting_mask": (lambda: Inpainting(CHANNELS, (HEIGHT, WIDTH), mask=INPAINT_MASK),
                        # y lists observed entries in (H, W, C) order
                        lambda x: x.permute(0, 2, 3, 1)[:, INPAINT_MASK.permute(1, 2, 0).bool()]),
    "superresolution_r2": (lambda: SuperResolution(CHANNELS, (HEIGHT, WIDTH), 2),
                           lambda x: F.avg_pool2d(x, 2)),
    "colorization": (lambda: Colorization((HEIGHT, WIDTH)), grey),
    "srconv_bicubic2": (lambda: SRConv(None, CHANNELS, (HEIGHT, WIDTH), 2),
                        strided_conv_reflect(bicubic_kernel(2), 2)),
    "srconv_gaussian5_stride2": (lambda: SRConv(gaussian_kernel(1.0, 5), CHANNELS, (HEIGHT, WIDTH), 2),
                                 strided_conv_reflect(gaussian_kernel(1.0, 5), 2)),
    "deblur_uniform5": (lambda: Deblurring(uniform_kernel(5), CHANNELS, (HEIGHT, WIDTH)),
                        blur_same_zero_padding(uniform_kernel(5), uniform_kernel(5))),
    "deblur_gaussian7": (lambda: Deblurring(gaussian_kernel(2.0, 7), CHANNELS, (HEIGHT, WIDTH)),
                         blur_same_zero_padding(gaussian_kernel(2.0, 7), gaussian_kernel(2.0, 7))),
    "deblur_anisotropic": (lambda: AnisotropicDeblurring(ASYMMETRIC_ROWS, ASYMMETRIC_COLS, CHANNELS,
                                                         (HEIGHT, WIDTH)),
                           blur_same_zero_padding(ASYMMETRIC_ROWS, ASYMMETRIC_COLS)),
}


def random_image(batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, CHANNELS, HEIGHT, WIDTH, generator=generator, dtype=torch.float64)


def dense(function: Callable[[torch.Tensor], torch.Tensor], dim: int) -> torch.Tensor:
    """The matrix of a linear map on (B, dim) rows: column j is function(e_j)."""
    return function(torch.eye(dim, dtype=torch.float64)).reshape(dim, -1).T


@pytest.mark.parametrize("name", CASES)
def test_H_equals_its_definition(name: str) -> None:
    make_operator, definition = CASES[name]
    x = random_image()
    expected = definition(x).reshape(x.shape[0], -1)
    torch.testing.assert_close(make_operator().H(x), expected, atol=F64_ATOL, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_V_and_U_are_orthogonal(name: str) -> None:
    operator = CASES[name][0]()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, operator.input_dim, generator=generator, dtype=torch.float64)
    z = torch.randn(3, operator.measurement_dim, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(operator.Vt(operator.V(x)), x, atol=F64_ATOL, rtol=0)
    torch.testing.assert_close(operator.V(operator.Vt(x)), x, atol=F64_ATOL, rtol=0)
    torch.testing.assert_close(operator.V(x).norm(dim=1), x.norm(dim=1), atol=F64_ATOL, rtol=0)
    torch.testing.assert_close(operator.Ut(operator.U(z)), z, atol=F64_ATOL, rtol=0)
    torch.testing.assert_close(operator.U(z).norm(dim=1), z.norm(dim=1), atol=F64_ATOL, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_svd_pieces_rebuild_H_and_agree_with_general_H(name: str) -> None:
    make_operator, definition = CASES[name]
    operator = make_operator()
    d, D = operator.measurement_dim, operator.input_dim
    explicit = dense(lambda e: definition(e.reshape(-1, CHANNELS, HEIGHT, WIDTH)), D)  # (d, D)
    singulars = operator.singulars()
    assert bool((singulars[:-1] >= singulars[1:]).all()), "singular values must be sorted descending"
    u_matrix, v_matrix = dense(operator.U, d), dense(operator.V, D)
    # H = U diag(s) V^T with V's first d columns paired with s: a wrong pairing (per channel) fails here.
    torch.testing.assert_close(u_matrix @ torch.diag(singulars) @ v_matrix[:, :d].T, explicit,
                               atol=F64_ATOL, rtol=0)
    general = GeneralH(explicit, operator.input_shape)
    torch.testing.assert_close(general.singulars(), singulars, atol=F64_ATOL, rtol=0)
    y = torch.randn(2, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(operator.Ht(y), general.Ht(y), atol=F64_ATOL, rtol=0)
    # The pseudo-inverse amplifies rounding by 1/s_min (up to ~1e5 for the asymmetric blur): compare
    # relative to its magnitude.
    torch.testing.assert_close(operator.H_pinv(y), general.H_pinv(y), atol=1e-8, rtol=1e-7)


# A 5-tap box on 8 rows with zero padding has rank 6: not full row rank.
FULL_ROW_RANK = [name for name in CASES if name != "deblur_uniform5"]


@pytest.mark.parametrize("name", FULL_ROW_RANK)
def test_H_of_pseudo_inverse_is_identity_for_full_row_rank(name: str) -> None:
    operator = CASES[name][0]()
    assert bool((operator.singulars() > 0).all())
    y = torch.randn(2, operator.measurement_dim, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    # Rounding in H^+ y grows like 1/s_min (~1e5 for the asymmetric blur) times 1e-16.
    torch.testing.assert_close(operator.H(operator.H_pinv(y)), y, atol=1e-8, rtol=0)


def test_rank_deficient_blur_zeroes_null_directions_and_keeps_penrose_identity() -> None:
    # A 3-tap box on 8 samples with zero padding has the exact null vector (1, -1, 0, 1, -1, 0, 1, -1).
    operator = AnisotropicDeblurring(uniform_kernel(3), uniform_kernel(5), CHANNELS, (HEIGHT, WIDTH))
    null_row = torch.tensor([1.0, -1, 0, 1, -1, 0, 1, -1], dtype=torch.float64)
    x_null = null_row[None, None, :, None].expand(1, CHANNELS, HEIGHT, WIDTH)
    zeros = torch.zeros(1, operator.measurement_dim, dtype=torch.float64)
    torch.testing.assert_close(operator.H(x_null), zeros, atol=F64_ATOL, rtol=0)
    assert int((operator.singulars() == 0).sum()) == CHANNELS * WIDTH  # one null row direction x all columns
    x = random_image()
    torch.testing.assert_close(operator.H(operator.H_pinv(operator.H(x))), operator.H(x), atol=1e-8, rtol=0)


def test_singular_threshold_zeroes_small_singular_values() -> None:
    exact = Deblurring(gaussian_kernel(2.0, 7), CHANNELS, (HEIGHT, WIDTH))
    thresholded = Deblurring(gaussian_kernel(2.0, 7), CHANNELS, (HEIGHT, WIDTH), singular_threshold=0.1)
    assert bool((exact.singulars() > 0).all())
    zeroed = thresholded.singulars() == 0
    assert 0 < int(zeroed.sum()) < zeroed.numel()


def test_inpainting_mask_and_missing_indices_agree() -> None:
    # A (H, W) mask holds for every channel; its missing pixels are (H, W, C) indices p·C + c.
    mask = (torch.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH) % 3 == 0).long()
    missing_pixels = torch.nonzero(mask.reshape(-1) == 0).reshape(-1)
    missing = (missing_pixels[:, None] * CHANNELS + torch.arange(CHANNELS)).reshape(-1)
    x = random_image()
    from_mask = Inpainting(CHANNELS, (HEIGHT, WIDTH), mask=mask)
    from_indices = Inpainting(CHANNELS, (HEIGHT, WIDTH), missing_indices=missing)
    torch.testing.assert_close(from_mask.H(x), from_indices.H(x), atol=0, rtol=0)
    assert from_mask.measurement_dim == CHANNELS * int(mask.sum())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Inpainting(3, 8), "exactly one of missing_indices"),
        (lambda: Inpainting(3, 8, missing_indices=torch.tensor([192])), "missing_indices must lie in"),
        (lambda: Inpainting(3, 8, mask=torch.ones(4, 4)), "mask must have shape"),
        (lambda: Inpainting(3, 8, mask=torch.full((8, 8), 0.5)), "only 0 .missing. and 1"),
        (lambda: SuperResolution(3, 8, 3), "ratio must be a positive divisor"),
        (lambda: SRConv(None, 3, 9, 2), "stride must be a positive divisor"),
        (lambda: Deblurring(torch.ones(4) / 4, 3, 8), "kernel_rows must have odd length"),
        (lambda: Deblurring(uniform_kernel(9), 3, 8), "longer than the image side"),
        (lambda: GeneralH(torch.ones(5, 4)), "rows <= columns"),
        (lambda: GeneralH(torch.ones(2, 12), (3, 2, 3)), "does not hold the matrix's 12 columns"),
        (lambda: Denoising(3, 8).H(torch.ones(2, 3, 4, 4)), r"expects x of shape \(B, 3, 8, 8\)"),
        (lambda: SuperResolution(3, 8, 2).Ht(torch.ones(2, 10)), r"expects shape \(B, 48\)"),
    ],
)
def test_bad_input_names_the_problem(build: Callable, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_float32_input_stays_float32() -> None:
    operator = SRConv(None, CHANNELS, (HEIGHT, WIDTH), 2)
    x = random_image().float()
    assert operator.H(x).dtype == torch.float32
    assert operator.H_pinv(operator.H(x)).dtype == torch.float32
