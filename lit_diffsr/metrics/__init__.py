"""Image metrics, pure torch/numpy (no Lightning). Import from the submodule you need:

- `image`: rgb_to_y (BT.601), rgb_to_grey, psnr, ssim, sr_consistency, downsample; per-image values.
- `fid`: InceptionFeatures, FIDStatistics (.npz save / checked load), frechet_distance,
  kernel_inception_distance (KID), FIDStatsCache / RealStatsKey.
- `perceptual`: LPIPS v0.1 (PerceptualDistance, load_lpips) with local weights.
- `weights`: where metric weights are found (resolve_weight) and how the cache is filled (fetch_weights).

The submodules are not imported here, so `lit_diffsr.metrics.image` does not pay for lpips or Inception.
"""
