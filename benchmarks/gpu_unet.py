"""GPU: the UNet step benchmark with fp32, bf16 autocast, channels_last and torch.compile, peers included,
and the cdm_64_256 stage's training images/s. Needs a CUDA device (exits with a message otherwise).

    python -m benchmarks.gpu_unet [--batch 64] [--size 64] [--rounds 20] [--stage-batch 16] [--no-compile]
"""

from __future__ import annotations

import argparse
import sys

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
from benchmarks.unet_step import diffusers_unet, lit_unet, lucidrains_unet, parameter_count, training_step


def stage_step(experiment: str, batch: int, bf16: bool):
    """One training step of the experiment's module on demo batches at its resolution, on the GPU."""
    cfg = compose_experiment(
        experiment, [f"data.batch_size={batch}", "data.dataset=demo", "data.num_workers=0"]
    )
    L.seed_everything(0, verbose=False)
    module = instantiate(cfg.model, _recursive_=False).cuda().train()
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    data = next(iter(datamodule.train_dataloader()))
    data = {k: v.cuda(non_blocking=True) if torch.is_tensor(v) else v for k, v in data.items()}
    optimizer = module.configure_optimizers()["optimizer"]

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = module.compute_losses(data)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--stage", default="cdm_64_256")
    parser.add_argument("--stage-batch", type=int, default=16)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_unet: no CUDA device here; run it on a GPU machine")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    load_before = load_average()
    variants = {  # name: (builder, channels_last, bf16)
        "lit_diffsr fp32": (lambda: lit_unet(args.size), False, False),
        "lit_diffsr bf16": (lambda: lit_unet(args.size), False, True),
        "lit_diffsr channels_last fp32": (lambda: lit_unet(args.size, channels_last=True), True, False),
        "lit_diffsr channels_last bf16": (lambda: lit_unet(args.size, channels_last=True), True, True),
        "diffusers fp32": (lambda: diffusers_unet(args.size), False, False),
        "diffusers bf16": (lambda: diffusers_unet(args.size), False, True),
        "denoising-diffusion-pytorch fp32": (lambda: lucidrains_unet(args.size), False, False),
        "denoising-diffusion-pytorch bf16": (lambda: lucidrains_unet(args.size), False, True),
    }
    if not args.no_compile:
        variants["lit_diffsr compile bf16"] = (lambda: lit_unet(args.size, compile=True), False, True)
        variants["lit_diffsr compile channels_last bf16"] = (
            lambda: lit_unet(args.size, channels_last=True, compile=True),
            True,
            True,
        )
    steps, sizes = {}, {}
    for name, (build, channels_last, bf16) in variants.items():
        torch.manual_seed(0)
        net = build().cuda().train()
        sizes[name] = parameter_count(net)
        steps[name] = training_step(net, args.batch, args.size, "cuda", channels_last, bf16)
    for bf16 in (False, True):
        steps[f"{args.stage} stage {'bf16' if bf16 else 'fp32'}"] = stage_step(
            args.stage, args.stage_batch, bf16
        )
    # Compiled variants compile during the warm-up rounds.
    times = interleaved(steps, args.rounds, warmup=3, synchronize=True)
    medians = {name: median(values) for name, values in times.items()}
    rows = []
    for name, values in times.items():
        batch = args.stage_batch if name.startswith(args.stage) else args.batch
        size = f"{sizes[name] / 1e6:.2f} M" if name in sizes else "-"
        rows.append([name, size, spread(values), f"{batch / medians[name]:.1f}"])
    peers = [n for n in medians if n.startswith(("diffusers", "denoising")) and "fp32" in n]
    ratio = min(medians[n] for n in peers) / medians["lit_diffsr fp32"]
    body = (
        f"{torch.cuda.get_device_name()}; UNet batch {args.batch} at {args.size}x{args.size}; {args.stage} "
        f"batch {args.stage_batch}; {args.rounds} interleaved rounds after 3 warm-ups; TF32 off.\n\n"
        + markdown_table(["variant", "parameters", "median step", "images/s"], rows)
        + f"\n\nlit_diffsr fp32 against the faster fp32 peer: {ratio:.2f}x (target 1.25x)."
    )
    data = {"step_seconds": times, "ratio_fp32_vs_fastest_peer": ratio}
    write_results("gpu_unet", "UNet step on the GPU", body, data, load_before)
    return data


if __name__ == "__main__":
    main()
