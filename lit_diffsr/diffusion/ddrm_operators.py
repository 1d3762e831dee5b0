"""Linear degradations with an efficient SVD, for DDRM (Kawar et al. 2022, "Denoising Diffusion
Restoration Models", §3.1 and App. D).

Every operator is H = U diag(s) V^T with H of size d x D (D = C·H·W input entries, d measurements),
applied through its factors and never formed densely for images:

    x  (B, C, H, W) or flattened (B, D), flattened channel-major (C, H, W) as ``x.reshape(B, -1)``;
    y  = H x, flattened (B, d), in each operator's documented order;
    x̄ = V^T x (B, D), the spectral coefficients: the first d pair with s_1..s_d, the rest span the
        null space of H (s_i = 0 there, "missing" in DDRM's words).

The singular values are sorted in descending order and U, V are permuted with them, so component i
of V^T x is always the one scaled by s_i, for every channel (App. D pairs them with a permutation
and keeps the separable (row, column) order; we sort globally, which pairs them just as well).
Factors are computed in float64 once and cast to the input's dtype and device when applied.
"""

import math

import torch

ImageSize = int | tuple[int, int]

# DDRM's released experiments zero 1-D singular values below this for blur and SR convolution, so
# near-null directions count as missing. The operators here are exact by default (threshold 0).
DDRM_SINGULAR_THRESHOLD = 3e-2


def _height_width(image_size: ImageSize) -> tuple[int, int]:
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return int(height), int(width)


def _like(table: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A float64 factor cast to x's dtype and device (index tensors only move)."""
    if table.is_floating_point():
        return table.to(dtype=x.dtype, device=x.device)
    return table.to(device=x.device)


def _zero_small_singulars(singulars: torch.Tensor, matrix_shape: torch.Size,
                          threshold: float) -> torch.Tensor:
    """Zero singular values below ``threshold`` and those below the numerical-rank tolerance
    s_max · max(shape) · ε_float64 (as numpy.linalg.matrix_rank): those are null directions, and 1/s
    would amplify rounding noise by ~1e16 in DDRM's ȳ = Σ^+ U^T y."""
    tolerance = float(singulars.max()) * max(matrix_shape) * torch.finfo(torch.float64).eps
    return torch.where(singulars <= max(threshold, tolerance), 0.0, singulars)


def _inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return inverse


class SVDOperator:
    """A linear degradation H = U diag(s) V^T (DDRM §3.1), given by its factors.

    Subclasses implement ``V``, ``Vt``, ``U``, ``Ut`` and set ``input_shape`` (C, H, W) and the singular
    values ``_singulars`` (d,), sorted in descending order (zeros allowed: rank-deficient H). The products
    ``H``, ``Ht`` and ``H_pinv`` follow from them.
    """

    input_shape: tuple[int, int, int]
    _singulars: torch.Tensor

    @property
    def input_dim(self) -> int:
        """D, the number of entries of x."""
        return math.prod(self.input_shape)

    @property
    def measurement_dim(self) -> int:
        """d, the number of entries of y = H x."""
        return self._singulars.numel()

    def singulars(self) -> torch.Tensor:
        """s_1 >= ... >= s_d >= 0, float64, shape (d,)."""
        return self._singulars

    def inverse_singulars(self) -> torch.Tensor:
        """The diagonal of Σ^+: 1 / s_i where s_i > 0, else 0, float64, shape (d,)."""
        positive = self._singulars > 0
        return torch.where(positive, 1.0 / torch.where(positive, self._singulars, 1.0), 0.0)

    def V(self, spectral: torch.Tensor) -> torch.Tensor:
        """x = V x̄: (B, D) spectral coefficients -> (B, D) flattened image."""
        raise NotImplementedError

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        """x̄ = V^T x: (B, C, H, W) or (B, D) image -> (B, D) spectral coefficients."""
        raise NotImplementedError

    def U(self, spectral: torch.Tensor) -> torch.Tensor:
        """y = U ȳ: (B, d) -> (B, d) measurements."""
        raise NotImplementedError

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        """U^T y: (B, d) measurements -> (B, d)."""
        raise NotImplementedError

    def add_zeros(self, spectral: torch.Tensor) -> torch.Tensor:
        """Pad (B, d) measurement-space coefficients with D - d zeros to (B, D) (the null-space part)."""
        return torch.nn.functional.pad(spectral, (0, self.input_dim - self.measurement_dim))

    def H(self, x: torch.Tensor) -> torch.Tensor:
        """y = U diag(s) V^T x, (B, d)."""
        singulars = _like(self._singulars, x)
        return self.U(singulars * self.Vt(x)[:, : self.measurement_dim])

    def Ht(self, y: torch.Tensor) -> torch.Tensor:
        """H^T y = V diag(s) U^T y, (B, D)."""
        y = self.check_measurements(y)
        return self.V(self.add_zeros(_like(self._singulars, y) * self.Ut(y)))

    def H_pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Moore-Penrose pseudo-inverse H^+ y = V diag(1/s, 0 where s = 0) U^T y, (B, D)."""
        y = self.check_measurements(y)
        return self.V(self.add_zeros(_like(self.inverse_singulars(), y) * self.Ut(y)))

    def _flatten_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) or (B, D) -> (B, D), with a clear error on a wrong shape."""
        if x.dim() == 4 and tuple(x.shape[1:]) == self.input_shape:
            return x.reshape(x.shape[0], -1)
        if x.dim() == 2 and x.shape[1] == self.input_dim:
            return x
        channels, height, width = self.input_shape
        raise ValueError(f"{type(self).__name__} expects x of shape (B, {channels}, {height}, {width}) "
                         f"or (B, {self.input_dim}), got {tuple(x.shape)}")

    def _check_spectral(self, spectral: torch.Tensor, dim: int, name: str) -> torch.Tensor:
        if spectral.dim() != 2 or spectral.shape[1] != dim:
            raise ValueError(f"{type(self).__name__}.{name} expects shape (B, {dim}), "
                             f"got {tuple(spectral.shape)}")
        return spectral

    def check_measurements(self, y: torch.Tensor) -> torch.Tensor:
        """y itself if it has shape (B, d), else a ValueError naming the expected shape."""
        return self._check_spectral(y, self.measurement_dim, "measurements y")


class _Selection(SVDOperator):
    """H keeps some entries of the flattened x: U = I, s = 1 and V^T is the permutation ``order`` of the
    (C, H, W) flattening, the ``kept`` observed entries first (in y's order), then the missing ones."""

    def __init__(self, input_shape: tuple[int, int, int], order: torch.Tensor, kept: int) -> None:
        self.input_shape = input_shape
        self._order = order
        self._inverse = _inverse_permutation(order)
        self._singulars = torch.ones(kept, dtype=torch.float64)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return self._flatten_input(x)[:, _like(self._order, x)]

    def V(self, spectral: torch.Tensor) -> torch.Tensor:
        return self._check_spectral(spectral, self.input_dim, "V")[:, _like(self._inverse, spectral)]

    def U(self, spectral: torch.Tensor) -> torch.Tensor:
        return self.check_measurements(spectral)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return self.check_measurements(y)


class Denoising(_Selection):
    """H = I (DDRM App. D, denoising); y = x flattened (C, H, W)."""

    def __init__(self, channels: int, image_size: ImageSize) -> None:
        height, width = _height_width(image_size)
        dim = channels * height * width
        super().__init__((channels, height, width), torch.arange(dim), dim)


class Inpainting(_Selection):
    """Keep a subset of pixel entries (DDRM App. D, inpainting).

    Exactly one of:
        missing_indices: LongTensor of indices into the pixel-major, channel-minor (H, W, C) flattening
            (index = (row · W + col) · C + channel), as the DDRM reference uses; any set, per channel.
        mask: 0/1 (or bool) tensor of shape (H, W) (the same for every channel) or (C, H, W);
            1 = observed, 0 = missing (the batch's ``mask`` convention).
    y lists the observed entries in ascending (H, W, C) order.
    """

    def __init__(self, channels: int, image_size: ImageSize, missing_indices: torch.Tensor | None = None,
                 mask: torch.Tensor | None = None) -> None:
        height, width = _height_width(image_size)
        input_shape, dim = (channels, height, width), channels * height * width
        if (missing_indices is None) == (mask is None):
            raise ValueError("Inpainting needs exactly one of missing_indices (into the (H, W, C) "
                             "flattening) or mask (1 = observed, shape (H, W) or (C, H, W))")
        if missing_indices is not None:
            missing_indices = torch.as_tensor(missing_indices).long().reshape(-1)
            if missing_indices.numel() and not 0 <= missing_indices.min() <= missing_indices.max() < dim:
                raise ValueError(f"missing_indices must lie in [0, {dim}) for (C, H, W) = {input_shape}")
            missing_hwc = torch.zeros(dim, dtype=torch.bool)
            missing_hwc[missing_indices] = True
        else:
            missing_hwc = _missing_from_mask(torch.as_tensor(mask), input_shape)
        # The (H, W, C) entry p·C + c sits at c·H·W + p in the channel-major (C, H, W) flattening.
        hwc = torch.arange(dim)
        chw_index = (hwc % channels) * height * width + hwc.div(channels, rounding_mode="floor")
        order = torch.cat([chw_index[~missing_hwc], chw_index[missing_hwc]])
        super().__init__(input_shape, order, int((~missing_hwc).sum()))


def _missing_from_mask(mask: torch.Tensor, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """(H, W) or (C, H, W) 0/1 mask (1 = observed) -> bool "missing" flags in (H, W, C) order."""
    channels, height, width = input_shape
    if tuple(mask.shape) == (height, width):
        mask = mask.expand(channels, height, width)
    if tuple(mask.shape) != input_shape:
        raise ValueError(f"mask must have shape ({height}, {width}) or {input_shape}, "
                         f"got {tuple(mask.shape)}")
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must hold only 0 (missing) and 1 (observed)")
    return (mask == 0).permute(1, 2, 0).reshape(-1)


class Colorization(SVDOperator):
    """Per-pixel greyscale y = 0.3333 R + 0.3334 G + 0.3333 B (the DDRM paper's weights, App. D).

    The 1x3 matrix h has one singular value ||h|| with right vector h/||h||; V completes it to an
    orthonormal basis of colour space. x̄ lists the first spectral channel of every pixel, then the two
    null-space channels; y is (B, H·W), row-major.
    """

    GREY_WEIGHTS = (0.3333, 0.3334, 0.3333)

    def __init__(self, image_size: ImageSize) -> None:
        height, width = _height_width(image_size)
        self.input_shape = (3, height, width)
        u_small, s_small, vh_small = torch.linalg.svd(torch.tensor([self.GREY_WEIGHTS], dtype=torch.float64))
        self._u_sign = u_small  # (1, 1): ±1
        self._v_small = vh_small.T  # (3, 3), first column h/||h|| (up to the sign in u)
        self._singulars = s_small.repeat(height * width)

    def _pixels(self, flat: torch.Tensor) -> torch.Tensor:
        return flat.reshape(flat.shape[0], 3, -1)  # (B, 3 channels or spectral channels, H·W)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        x = self._flatten_input(x)
        return (_like(self._v_small, x).T @ self._pixels(x)).reshape(x.shape[0], -1)

    def V(self, spectral: torch.Tensor) -> torch.Tensor:
        spectral = self._check_spectral(spectral, self.input_dim, "V")
        return (_like(self._v_small, spectral) @ self._pixels(spectral)).reshape(spectral.shape[0], -1)

    def U(self, spectral: torch.Tensor) -> torch.Tensor:
        return self.check_measurements(spectral) * _like(self._u_sign, spectral)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return self.check_measurements(y) * _like(self._u_sign, y)


class SeparableOperator(SVDOperator):
    """H x = A_rows X A_cols^T per channel, for 1-D matrices A_rows (k_h x H) acting down the columns
    (the height axis) and A_cols (k_w x W) along the rows (DDRM App. D, separable kernels).

    With A = U_a diag(s_a) V_a^T, H = (U_r ⊗ U_c) diag(s_r ⊗ s_c) (V_r ⊗ V_c)^T: the spectral grid
    V_r^T X V_c has observed entries (i < k_h, j < k_w) with singular value s_r[i] s_c[j] and null entries
    elsewhere. Observed entries of all channels are sorted by singular value (descending, stable) and
    y is the (C, k_h, k_w) channel-major flattening of A_rows X A_cols^T.

    Args:
        singular_threshold: 1-D singular values at or below it are set to 0 (treated as missing);
            ``DDRM_SINGULAR_THRESHOLD`` reproduces the paper's deblurring setup, 0 keeps H exact (only
            numerically-zero values, below s_max · n · ε_float64, are zeroed).
    """

    def __init__(self, rows_matrix: torch.Tensor, cols_matrix: torch.Tensor, channels: int,
                 singular_threshold: float = 0.0) -> None:
        rows_matrix, cols_matrix = rows_matrix.double(), cols_matrix.double()
        (k_h, height), (k_w, width) = rows_matrix.shape, cols_matrix.shape
        if k_h > height or k_w > width:
            raise ValueError(f"separable operator needs at most as many outputs as inputs per axis, got "
                             f"rows {tuple(rows_matrix.shape)}, cols {tuple(cols_matrix.shape)}")
        self.input_shape = (channels, height, width)
        self._measurement_shape = (channels, k_h, k_w)
        self._u_rows, s_rows, vh_rows = torch.linalg.svd(rows_matrix, full_matrices=True)
        self._u_cols, s_cols, vh_cols = torch.linalg.svd(cols_matrix, full_matrices=True)
        self._v_rows, self._v_cols = vh_rows.T, vh_cols.T
        s_rows = _zero_small_singulars(s_rows, rows_matrix.shape, singular_threshold)
        s_cols = _zero_small_singulars(s_cols, cols_matrix.shape, singular_threshold)

        grid_singulars = torch.outer(s_rows, s_cols).expand(channels, k_h, k_w).reshape(-1)
        by_value = torch.argsort(grid_singulars, descending=True, stable=True)
        self._singulars = grid_singulars[by_value]
        # Position of each sorted observed entry in the (C, k_h, k_w) measurement grid ...
        self._measurement_order = by_value
        self._measurement_inverse = _inverse_permutation(by_value)
        # ... and in the (C, H, W) spectral grid, followed by the null entries (i >= k_h or j >= k_w).
        grid = torch.arange(self.input_dim).reshape(channels, height, width)
        observed = torch.zeros(height, width, dtype=torch.bool)
        observed[:k_h, :k_w] = True
        observed_positions = grid[:, :k_h, :k_w].reshape(-1)[by_value]
        self._order = torch.cat([observed_positions, grid[:, ~observed].reshape(-1)])
        self._inverse = _inverse_permutation(self._order)

    @staticmethod
    def _both_axes(left: torch.Tensor, grid: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """left @ grid @ right on every channel of a (B, C, h, w) grid, flattened to (B, -1)."""
        return (_like(left, grid) @ grid @ _like(right, grid)).reshape(grid.shape[0], -1)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._flatten_input(x).reshape(-1, *self.input_shape)
        return self._both_axes(self._v_rows.T, grid, self._v_cols)[:, _like(self._order, x)]

    def V(self, spectral: torch.Tensor) -> torch.Tensor:
        spectral = self._check_spectral(spectral, self.input_dim, "V")
        grid = spectral[:, _like(self._inverse, spectral)].reshape(-1, *self.input_shape)
        return self._both_axes(self._v_rows, grid, self._v_cols.T)

    def U(self, spectral: torch.Tensor) -> torch.Tensor:
        spectral = self.check_measurements(spectral)
        grid = spectral[:, _like(self._measurement_inverse, spectral)].reshape(-1, *self._measurement_shape)
        return self._both_axes(self._u_rows, grid, self._u_cols.T)

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        grid = self.check_measurements(y).reshape(-1, *self._measurement_shape)
        return self._both_axes(self._u_rows.T, grid, self._u_cols)[:, _like(self._measurement_order, y)]


def _block_average_matrix(size: int, ratio: int) -> torch.Tensor:
    """(size/ratio x size) matrix averaging consecutive blocks of ``ratio`` samples."""
    return torch.kron(torch.eye(size // ratio, dtype=torch.float64),
                      torch.full((1, ratio), 1.0 / ratio, dtype=torch.float64))


class SuperResolution(SeparableOperator):
    """Block averaging by ``ratio`` (as ``F.avg_pool2d(x, ratio)``): A = I ⊗ (1/r)·1^T per axis
    (DDRM App. D, super-resolution); every singular value is 1/r. y is (C, H/r, W/r) channel-major."""

    def __init__(self, channels: int, image_size: ImageSize, ratio: int) -> None:
        height, width = _height_width(image_size)
        if ratio < 1 or height % ratio or width % ratio:
            raise ValueError(f"ratio must be a positive divisor of image_size {(height, width)}, got {ratio}")
        super().__init__(_block_average_matrix(height, ratio), _block_average_matrix(width, ratio), channels)


def _convolution_matrix(kernel: torch.Tensor, size: int, stride: int, first_tap: int,
                        padding: str) -> torch.Tensor:
    """1-D cross-correlation as a (size/stride x size) matrix: output o sums
    kernel[m] · signal[stride·o + first_tap + m], m = 0..K-1, with the signal extended by ``padding``:
    "zeros", or "reflect" in the image-processing (scipy.ndimage) sense, the edge sample repeated:
    signal[-1 - j] = signal[j] (torch's F.pad "reflect" would skip the edge sample)."""
    kernel = torch.as_tensor(kernel, dtype=torch.float64).reshape(-1)
    if kernel.numel() > size:
        raise ValueError(f"kernel of length {kernel.numel()} is longer than the image side {size}")
    matrix = torch.zeros(size // stride, size, dtype=torch.float64)
    for output in range(size // stride):
        for tap, weight in enumerate(kernel):
            position = stride * output + first_tap + tap
            if padding == "reflect":
                position = -1 - position if position < 0 else position
                position = 2 * size - 1 - position if position >= size else position
            elif not 0 <= position < size:
                continue
            matrix[output, position] += weight
    return matrix


class AnisotropicDeblurring(SeparableOperator):
    """Blur with the separable 2-D kernel outer(kernel_rows, kernel_cols), zero padding, "same" size:
    ``F.conv2d(x, outer(kernel_rows, kernel_cols) per channel, padding=(K_r // 2, K_c // 2))`` (a
    cross-correlation, like conv2d). ``kernel_rows`` runs down the height axis (its length is the
    kernel's height), ``kernel_cols`` along the width axis. Kernel lengths must be odd.
    (DDRM App. D, deblurring.) y is the blurred image, (C, H, W) channel-major."""

    def __init__(self, kernel_rows: torch.Tensor, kernel_cols: torch.Tensor, channels: int,
                 image_size: ImageSize, singular_threshold: float = 0.0) -> None:
        height, width = _height_width(image_size)
        matrices = []
        for name, kernel, size in (("kernel_rows", kernel_rows, height), ("kernel_cols", kernel_cols, width)):
            kernel = torch.as_tensor(kernel).reshape(-1)
            if kernel.numel() % 2 == 0:
                raise ValueError(f"{name} must have odd length for a centred 'same' blur, "
                                 f"got {kernel.numel()}")
            matrices.append(_convolution_matrix(kernel, size, 1, -(kernel.numel() // 2), "zeros"))
        super().__init__(*matrices, channels, singular_threshold)


class Deblurring(AnisotropicDeblurring):
    """Isotropic separable blur: the same 1-D kernel down the rows and along the columns."""

    def __init__(self, kernel_1d: torch.Tensor, channels: int, image_size: ImageSize,
                 singular_threshold: float = 0.0) -> None:
        super().__init__(kernel_1d, kernel_1d, channels, image_size, singular_threshold)


class SRConv(SeparableOperator):
    """Strided separable convolution: anti-aliased downsampling, as DDRM's bicubic super-resolution.

    Along each axis, output o = Σ_m kernel[m] · x[stride·o + stride//2 - K//2 + m] (the kernel centred
    between the samples of block o for even K), with reflect padding in the image-processing sense
    (edge sample repeated: x[-1] = x[0]); this is the DDRM reference's operator. Default kernel:
    ``bicubic_kernel(stride)``. y is (C, H/stride, W/stride) channel-major.
    """

    def __init__(self, kernel_1d: torch.Tensor | None, channels: int, image_size: ImageSize, stride: int = 2,
                 singular_threshold: float = 0.0) -> None:
        height, width = _height_width(image_size)
        if stride < 1 or height % stride or width % stride:
            raise ValueError(f"stride must be a positive divisor of image_size {(height, width)}, "
                             f"got {stride}")
        kernel = bicubic_kernel(stride) if kernel_1d is None else torch.as_tensor(kernel_1d).reshape(-1)
        first_tap = stride // 2 - kernel.numel() // 2
        super().__init__(_convolution_matrix(kernel, height, stride, first_tap, "reflect"),
                         _convolution_matrix(kernel, width, stride, first_tap, "reflect"),
                         channels, singular_threshold)


class GeneralH(SVDOperator):
    """Any dense d x D matrix (d <= D), through torch.linalg.svd: for small problems and tests.

    Args:
        matrix: H, shape (d, D).
        input_shape: (C, H, W) with C·H·W = D, the image shape the sampler uses; default (1, 1, D).
    """

    def __init__(self, matrix: torch.Tensor, input_shape: tuple[int, int, int] | None = None) -> None:
        if matrix.dim() != 2 or matrix.shape[0] > matrix.shape[1]:
            raise ValueError("GeneralH needs a 2-D matrix with rows <= columns (d <= D), "
                             f"got {tuple(matrix.shape)}")
        self.input_shape = tuple(input_shape) if input_shape is not None else (1, 1, matrix.shape[1])
        if math.prod(self.input_shape) != matrix.shape[1]:
            raise ValueError(f"input_shape {self.input_shape} does not hold the matrix's "
                             f"{matrix.shape[1]} columns")
        self._u, singulars, vh = torch.linalg.svd(matrix.double(), full_matrices=True)
        self._singulars = _zero_small_singulars(singulars, matrix.shape, 0.0)
        self._v = vh.T

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        return self._flatten_input(x) @ _like(self._v, x)

    def V(self, spectral: torch.Tensor) -> torch.Tensor:
        return self._check_spectral(spectral, self.input_dim, "V") @ _like(self._v, spectral).T

    def U(self, spectral: torch.Tensor) -> torch.Tensor:
        return self.check_measurements(spectral) @ _like(self._u, spectral).T

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        return self.check_measurements(y) @ _like(self._u, y)


def bicubic_kernel(factor: int = 2, a: float = -0.5) -> torch.Tensor:
    """The 1-D Keys cubic kernel (Keys 1981, eq. 15, a = -0.5) for downsampling by ``factor``:
    4·factor taps at x = (m - 2·factor + 1/2) / factor, weights cubic(x) / factor (float64)."""
    x = ((torch.arange(4 * factor, dtype=torch.float64) - 2 * factor + 0.5) / factor).abs()
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1  # |x| <= 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a  # 1 < |x| < 2
    return torch.where(x <= 1, near, torch.where(x < 2, far, 0.0)) / factor


def gaussian_kernel(std: float, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian exp(-m²/(2 std²)), m = -(size//2)..size//2 (odd ``size``), float64."""
    if size % 2 == 0 or std <= 0:
        raise ValueError(f"gaussian_kernel needs an odd size and std > 0, got size={size}, std={std}")
    taps = torch.arange(size, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(taps**2) / (2 * std**2))
    return kernel / kernel.sum()


def uniform_kernel(size: int) -> torch.Tensor:
    """Box kernel of ``size`` (odd) equal taps summing to 1, float64."""
    if size % 2 == 0:
        raise ValueError(f"uniform_kernel needs an odd size, got {size}")
    return torch.full((size,), 1.0 / size, dtype=torch.float64)
