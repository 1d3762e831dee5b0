"""Data pipeline: images/s of the SR DataModule (256 crops, LR made on the fly) against the training step.

The producer: `ImageDataModule(dataset="demo" or a folder, resolution=256, degradation=[{type: downsample,
scale: 4}])`, iterated as the Trainer does (its train loader), with 0 and 2 worker processes. The consumer:
the training step (forward, L_hybrid, backward, AdamW) of an SR stage's module built from its experiment
(default `cdm_64_256`: 64 -> 256, 128-channel UNet) on batches of that DataModule. Producer and consumer
are interleaved round by round. The pipeline keeps up when its images/s exceeds the step's.

    python -m benchmarks.data_pipeline [--root FOLDER] [--batch 8] [--batches 6] [--rounds 3]
        [--experiment cdm_64_256] [--step-batch 1] [--steps 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

import lightning as L
import torch
from hydra.utils import instantiate

from benchmarks.common import (
    compose_experiment,
    interleaved,
    load_average,
    markdown_table,
    median,
    spread,
    write_results,
)
from lit_diffsr.data.datamodule import ImageDataModule


def sr_datamodule(root: str | None, batch: int, workers: int) -> ImageDataModule:
    datamodule = ImageDataModule(
        dataset="folder" if root else "demo",
        root=root,
        resolution=256,
        batch_size=batch,
        num_workers=workers,
        persistent_workers=False,
        degradation=[{"type": "downsample", "scale": 4}],
        demo_samples_per_epoch=10_000,
    )
    datamodule.setup("fit")
    return datamodule


def producer(datamodule: ImageDataModule, batches: int) -> Callable[[], float]:
    """Seconds per image over `batches` batches, after the loader's first batch (worker start-up)."""

    def run() -> float:
        loader = iter(datamodule.train_dataloader())
        first = next(loader)
        start = time.perf_counter()
        for batch in itertools.islice(loader, batches):
            assert batch["lr"].shape[-1] * 4 == batch["hr"].shape[-1] == 256
        return (time.perf_counter() - start) / (batches * len(first["hr"]))

    return run


def consumer(experiment: str, root: str | None, batch: int, steps: int) -> Callable[[], float]:
    """Seconds per image of the stage's training step (module, optimiser and batches built once)."""
    overrides = [f"data.batch_size={batch}", "data.num_workers=0"]
    overrides += [f"data.root={root}", "data.dataset=folder"] if root else ["data.dataset=demo"]
    cfg = compose_experiment(experiment, overrides)
    L.seed_everything(0, verbose=False)
    module = instantiate(cfg.model, _recursive_=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    batches = list(itertools.islice(iter(datamodule.train_dataloader()), steps))
    optimizer = module.configure_optimizers()["optimizer"]
    module.train()

    def run() -> float:
        start = time.perf_counter()
        for data in batches:
            loss = module.compute_losses(data)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / (steps * batch)

    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=None, help="an image folder (default: the bundled demo photos)")
    parser.add_argument("--batch", type=int, default=8, help="DataModule batch size")
    parser.add_argument("--batches", type=int, default=6, help="batches timed per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--experiment", default="cdm_64_256", help="the SR stage whose step consumes the data"
    )
    parser.add_argument("--step-batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="training steps timed per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    candidates = {
        f"DataModule, {workers} workers": producer(
            sr_datamodule(args.root, args.batch, workers), args.batches
        )
        for workers in (0, 2)
    }
    candidates[f"{args.experiment} training step"] = consumer(
        args.experiment, args.root, args.step_batch, args.steps
    )
    times = interleaved(candidates, args.rounds, warmup=1)
    rates = {name: 1.0 / median(values) for name, values in times.items()}
    step_rate = rates[f"{args.experiment} training step"]
    rows = [
        [name, spread(values), f"{rates[name]:.2f}", f"{rates[name] / step_rate:.1f}x"]
        for name, values in times.items()
    ]
    body = (
        f"Data: {args.root or 'bundled demo photos'}, 256x256 HR crops, LR x4 (bicubic) on the fly, batch "
        f"{args.batch}, {args.batches} batches per round. Consumer: `{args.experiment}` training step, batch "
        f"{args.step_batch}, {args.steps} steps per round, CPU. {args.rounds} interleaved rounds after a "
        "warm-up.\n\n"
        + markdown_table(["stage", "median s/image", "images/s", "vs training step"], rows)
        + "\n\nLast column > 1: the pipeline keeps up with this CPU's step. A GPU step is faster: compare "
        "the DataModule's images/s with the cdm_64_256 images/s of `benchmarks/gpu_unet.py`."
    )
    data = {"seconds_per_image": times, "images_per_second": rates}
    write_results("data_pipeline", "Data pipeline against the training step", body, data, load_before)
    return data


if __name__ == "__main__":
    main()
