"""ImageMetrics and FIDCallback inside a real Lightning validate/test loop, on a toy module that returns
samples for its first batches only."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lit_diffsr.callbacks.metrics import FeatureMoments, FIDCallback, ImageMetrics, as_saved_image
from lit_diffsr.metrics.fid import FIDStatistics, FIDStatsCache, RealStatsKey
from lit_diffsr.metrics.image import downsample, psnr, sr_consistency, ssim
from lit_diffsr.metrics.perceptual import PerceptualDistance


class SamplingStub(L.LightningModule):
    """{"samples": a fixed distortion of hr} for the first `sampled_batches` batches, as methods return."""

    def __init__(self, sampled_batches: int = 1, distortion: float = 0.85):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.sampled_batches = sampled_batches
        self.distortion = distortion

    def distort(self, hr: torch.Tensor) -> torch.Tensor:
        return hr * self.distortion

    def validation_step(self, batch, batch_idx):
        return {"samples": self.distort(batch["hr"])} if batch_idx < self.sampled_batches else None

    test_step = validation_step


def toy_loader(count: int = 4, size: int = 24, scale: int = 2) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(
        torch.rand(count, 3, size + 4, size + 4, generator=generator), 5, 1
    )
    hr = smooth * 2 - 1
    lr = downsample(hr, scale, "bicubic").clamp(-1, 1)
    items = [{"hr": hr[i], "lr": lr[i], "name": f"img{i}"} for i in range(count)]
    return DataLoader(items, batch_size=2)


def run(stage: str, module: L.LightningModule, callback: L.Callback, loader: DataLoader) -> dict:
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[callback],
    )
    (logged,) = getattr(trainer, stage)(module, dataloaders=loader, verbose=False)
    return logged


def test_image_metrics_average_the_sampled_images_only(random_lpips_file):
    loader, module = toy_loader(size=64), SamplingStub(sampled_batches=1)
    callback = ImageMetrics(scale=2, lpips_net="alex", lpips_weights=str(random_lpips_file))
    logged = run("validate", module, callback, loader)
    first = next(iter(loader))
    samples, hr = as_saved_image(module.distort(first["hr"])), as_saved_image(first["hr"])
    expected = {
        "val/psnr": psnr(samples, hr, (-1.0, 1.0), shave=2).mean(),
        "val/ssim": ssim(samples, hr, (-1.0, 1.0), shave=2).mean(),
        "val/psnr_y": psnr(samples, hr, (-1.0, 1.0), y_channel=True, shave=2).mean(),
        "val/ssim_y": ssim(samples, hr, (-1.0, 1.0), y_channel=True, shave=2).mean(),
        "val/lpips": PerceptualDistance("alex", random_lpips_file)(samples, hr).mean(),
        "val/consistency": sr_consistency(samples, as_saved_image(first["lr"]), 2).mean(),
    }
    assert set(logged) == set(expected)
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value.item(), rel=1e-5), name
    # quantised to 8 bits like a saved PNG: a distortion smaller than half a level changes nothing
    assert as_saved_image(hr + 1e-3).equal(hr)


def test_image_metrics_prefix_by_stage_and_skip_missing_inputs():
    loader, module = toy_loader(), SamplingStub(sampled_batches=2)
    logged = run("test", module, ImageMetrics(scale=1), loader)
    assert set(logged) == {"test/psnr", "test/ssim", "test/psnr_y", "test/ssim_y"}  # scale 1: no consistency
    assert run("validate", SamplingStub(sampled_batches=0), ImageMetrics(scale=2), loader) == {}


def test_images_too_small_for_the_shave_or_window_log_what_they_can():
    # 16x16 at x8 (a smoke run of an x8 experiment): the shave leaves nothing, only consistency is defined
    logged = run("validate", SamplingStub(), ImageMetrics(scale=8), toy_loader(size=16, scale=8))
    assert set(logged) == {"val/consistency"}
    # 16x16 at x4: the 8x8 left after the shave has a PSNR but is smaller than SSIM's 11x11 window
    logged = run("validate", SamplingStub(), ImageMetrics(scale=4), toy_loader(size=16, scale=4))
    assert set(logged) == {"val/psnr", "val/psnr_y", "val/consistency"}


def test_feature_moments_merge_like_processes_and_equal_direct_statistics():
    features = torch.from_numpy(np.random.default_rng(0).normal(size=(10, 8)))
    first, second = FeatureMoments(dim=8), FeatureMoments(dim=8)
    first.update(features[:3])
    second.update(features[3:])
    first.merge_state(second)  # what the DDP reduction does: dist_reduce_fx="sum" on every state
    merged, direct = first.compute(), FIDStatistics.from_features(features)
    assert merged.count == 10
    np.testing.assert_allclose(merged.mu, direct.mu, rtol=1e-12)
    np.testing.assert_allclose(merged.sigma, direct.sigma, rtol=1e-9, atol=1e-12)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert FeatureMoments(dim=8).compute() is None  # fewer than 2 vectors: no statistics


def test_fid_callback_caches_real_statistics_and_uses_them(inception, tmp_path):
    loader = toy_loader()
    callback = FIDCallback(dataset="toy", stats_dir=tmp_path / "stats")
    callback.inception = inception  # share the session's network (same weights, spares loading it again)
    # every batch sampled, samples == real images: the two Gaussians coincide
    logged = run("validate", SamplingStub(sampled_batches=2, distortion=1.0), callback, loader)
    # 4 images -> rank-3 covariances; the distance of equal statistics is float64 rounding (~1e-12)
    assert abs(logged["val/fid"]) < 1e-6
    key = RealStatsKey("toy", "val", 24, 4)
    cached = FIDStatsCache(tmp_path / "stats").load(key)
    assert cached is not None and cached.count == 4

    # A new run must read the cache rather than recompute: shift the cached mean by 1 in every feature, and
    # FID of the same samples becomes ||shift||^2 = 2048 exactly (covariances still equal).
    FIDStatistics(cached.mu + 1.0, cached.sigma, cached.count).save(
        FIDStatsCache(tmp_path / "stats").path(key)
    )
    callback = FIDCallback(dataset="toy", stats_dir=tmp_path / "stats")
    callback.inception = inception
    logged = run("validate", SamplingStub(sampled_batches=2, distortion=1.0), callback, loader)
    assert logged["val/fid"] == pytest.approx(2048.0, rel=1e-6)


def test_fid_callback_needs_two_samples(inception, tmp_path):
    callback = FIDCallback()
    callback.inception = inception
    with pytest.warns(UserWarning, match="needs 2 or more samples"):
        logged = run("test", SamplingStub(sampled_batches=0), callback, toy_loader(count=2))
    assert logged == {}
    assert list(tmp_path.iterdir()) == []  # nothing cached without a dataset name
