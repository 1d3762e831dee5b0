"""Speed of FID on this machine: seconds per 1000 images through InceptionFeatures
(8-bit quantisation, TF1 bilinear resize to 299, Inception-v3) plus the Fréchet distance of 2048-d
statistics.

    python benchmarks/fid_speed.py [--images 64] [--batch 16] [--size 64] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from lit_diffsr.metrics.fid import FEATURE_DIM, FIDStatistics, InceptionFeatures


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=64, help="images timed (after one warm-up batch)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="input resolution (resized to 299)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    extractor = InceptionFeatures().to(args.device)
    generator = torch.Generator().manual_seed(0)
    batch = (torch.rand(args.batch, 3, args.size, args.size, generator=generator) * 2 - 1).to(args.device)
    extractor(batch)  # warm-up: TorchScript profiles its first calls
    extractor(batch)
    batches = max(args.images // args.batch, 1)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        extractor(batch)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    per_image = (time.perf_counter() - start) / (batches * args.batch)
    cpu_per_image = (time.process_time() - cpu_start) / (batches * args.batch)

    features = np.random.default_rng(0).normal(size=(2 * FEATURE_DIM, FEATURE_DIM))
    first, second = FIDStatistics.from_features(features[::2]), FIDStatistics.from_features(features[1::2])
    start, cpu_start = time.perf_counter(), time.process_time()
    first.frechet_distance(second)
    distance_seconds, distance_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"device {args.device}, {args.threads} threads, {args.size}x{args.size} inputs, batch {args.batch}")
    # CPU seconds show the cost on a busy shared machine, where wall time also counts other processes
    print(
        f"features: {per_image * 1000:.1f} s per 1000 images ({1 / per_image:.1f} images/s), CPU time "
        f"{cpu_per_image * 1000:.1f} s"
    )
    print(f"Frechet distance (2048-d, full rank): {distance_seconds:.2f} s, CPU time {distance_cpu:.2f} s")
    return per_image * 1000


if __name__ == "__main__":
    main()
