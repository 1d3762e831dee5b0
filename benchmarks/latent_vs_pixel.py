"""Cost per image of latent vs pixel-space diffusion SR at the same output size, on this machine.

    python -m benchmarks.latent_vs_pixel [--size 64] [--scale 4] [--batch 4] [--nfe 25] [--rounds 3]

Both models use the same UNet (widths, levels, attention at the same level) and the same DDIM sampler:
- pixel: the UNet denoises the HR image (size x size x 3) next to the bicubic-upsampled LR image (SR3-style);
- latent: `LatentDiffusionSR` with an f = 4, 3-channel autoencoder (autoencoder_quickstart's shape): the UNet
  denoises (size/4)^2 x 3 latents next to the LR image; training also encodes the HR image, sampling decodes
  once at the end (both included in the times).
Training = one optimiser step (forward, backward, AdamW); sampling = `nfe` DDIM steps. The two are timed
interleaved in the same run (benchmarks/common.py), so the ratios hold under the machine's load.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from benchmarks.common import interleaved, load_average, markdown_table, median, spread, write_results
from lit_diffsr.methods.ldm_sr import LatentDiffusionSR
from lit_diffsr.methods.sampling import Diffusion
from lit_diffsr.nets import UNet
from lit_diffsr.ops.resize import upsample_bicubic

UNET = {
    "model_channels": 32,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "num_heads": 2,
    "norm_groups": 8,
}
AUTOENCODER = {
    "_target_": "lit_diffsr.nets.autoencoder.AutoencoderKL",
    "latent_channels": 3,
    "model_channels": 32,
    "channel_mult": [1, 2, 4],
    "num_res_blocks": 1,
    "norm_groups": 8,
}
DIFFUSION = {"schedule": "linear", "num_timesteps": 1000, "variance": "fixed_small", "loss": "mse"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=64, help="output (HR) size in pixels")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--nfe", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    load_before = load_average()
    sampler = {"name": "ddim", "steps": f"ddim{args.nfe}", "eta": 0.0, "clip_denoised": False}
    attention = [args.size // 4]  # the third level of both UNets (output pixels)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained autoencoder: timing only
        latent = LatentDiffusionSR(
            {
                "_target_": "lit_diffsr.nets.UNet",
                "image_size": args.size,
                "attention_resolutions": attention,
                **UNET,
            },
            autoencoder={**AUTOENCODER, "image_size": args.size},
            diffusion=DIFFUSION,
            sampler=sampler,
        )
    pixel_net = UNet(args.size, cond_channels=3, attention_resolutions=attention, **UNET)
    pixel_setup = Diffusion(DIFFUSION, dict(sampler))

    hr = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    lr = torch.nn.functional.avg_pool2d(hr, args.scale)
    batch = {"hr": hr, "lr": lr}
    latent_optimizer = torch.optim.AdamW(latent.net.parameters(), lr=1e-4)
    pixel_optimizer = torch.optim.AdamW(pixel_net.parameters(), lr=1e-4)

    def train_latent() -> None:
        loss = latent.compute_losses(batch)["loss"]
        latent_optimizer.zero_grad()
        loss.backward()
        latent_optimizer.step()

    def train_pixel() -> None:
        cond = upsample_bicubic(lr, args.scale)
        loss = pixel_setup.training_losses(lambda x, t: pixel_net(x, t, cond=cond), hr)["loss"]
        pixel_optimizer.zero_grad()
        loss.backward()
        pixel_optimizer.step()

    def sample_latent() -> None:
        with torch.no_grad():
            latent.generate({"lr": lr, "hr": hr, "seed": 0})

    def sample_pixel() -> None:
        cond = upsample_bicubic(lr, args.scale)
        with torch.no_grad():
            pixel_setup.sample(lambda x, t: pixel_net(x, t, cond=cond), hr.shape, device="cpu", seed=0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        times = interleaved(
            {"train latent": train_latent, "train pixel": train_pixel},
            rounds=args.rounds * 3,
        )
        times |= interleaved(
            {"sample latent": sample_latent, "sample pixel": sample_pixel}, rounds=args.rounds
        )

    rows = []
    for task in ("train", "sample"):
        latent_time, pixel_time = median(times[f"{task} latent"]), median(times[f"{task} pixel"])
        rows.append(
            [
                task,
                f"{1000 * pixel_time / args.batch:.1f}",
                f"{1000 * latent_time / args.batch:.1f}",
                f"{pixel_time / latent_time:.2f}x",
                f"{spread(times[f'{task} pixel'])} / {spread(times[f'{task} latent'])}",
            ]
        )
    body = (
        f"{args.size} px output, {args.scale}x SR, batch {args.batch}, DDIM {args.nfe} steps; UNet {UNET}; "
        f"latent: f = 4, 3 channels ({args.size // 4} px latents).\n\n"
        + markdown_table(
            [
                "",
                "pixel ms / image",
                "latent ms / image",
                "pixel / latent",
                "per-batch median (IQR) pixel / latent",
            ],
            rows,
        )
        + "\n\nLatent times include encoding the HR image (training) and decoding the sample (sampling)."
    )
    write_results(
        "latent_vs_pixel",
        "Latent vs pixel-space diffusion SR: cost per image",
        body,
        {"args": vars(args), "seconds_per_batch": times},
        load_before,
    )


if __name__ == "__main__":
    main()
