"""A small SR3 trained x4 for a fixed CPU budget on the bundled photographs, scored on Set5 and Set14.

    python benchmarks/sr3_set5.py [--root DIR] [--cpu-minutes 10] [--threads 2] [--steps ddim20] [--crop 128]

Trains `lit_diffsr.methods.super_resolution.SR3` (tiny UNet, 64x64 HR crops of the scikit-image /
scikit-learn photographs, LR by anti-aliased bicubic x4) for `--cpu-minutes` of this process's CPU time
(a budget that does not depend on other load) on `--threads` threads, with EMA weights, then super-resolves
the LR images of Set5 and Set14 (DIR/<set>/SelfExSR/image_SRF_4/*_LR.png, DIR = $LIT_DIFFSR_SR_DATA or
<paths.data_dir>/sr) and reports Y-channel PSNR / SSIM (4 pixels shaved) against PIL bicubic upsampling.
`--crop N` scores the centre N x N HR region (LR N/4, bicubic cropped from the whole-image upsampling) to
keep CPU sampling short; `--crop 0` scores whole images (comparable with published numbers). Writes
benchmarks/results/sr3_set5.md and a sample image benchmarks/results/sr3_set5.png
(rows: bicubic | SR3 | HR, centre crops). A few CPU minutes are far from the paper's 1M GPU steps:
expect SR3 below bicubic here; the point is a reproducible end-to-end number.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from lit_diffsr.callbacks.ema import _ForeachEMAModel
from lit_diffsr.data.datamodule import ImageDataModule
from lit_diffsr.methods.super_resolution import SR3
from lit_diffsr.metrics.image import psnr, ssim
from lit_diffsr.runtime import configured_data_dir

# The SelfExSR release of the SR test sets (MATLAB-bicubic LR): <paths.data_dir>/sr/<Set>/SelfExSR/.
DEFAULT_ROOT = configured_data_dir() / "sr"
RESULTS = Path(__file__).parent / "results"
SCALE = 4
NET = {
    "_target_": "lit_diffsr.nets.UNet",
    "image_size": 64,
    "model_channels": 32,
    "channel_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [16],
    "num_heads": 2,
    "cond_channels": 3,
    "dropout": 0.0,
}


def to_model_range(image: Image.Image) -> torch.Tensor:
    """PIL RGB -> (1, 3, H, W) float32 in [-1, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def to_8bit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> rounded [0, 255] float64, as the image would be saved."""
    return ((images.double().clamp(-1, 1) + 1) * 127.5).round()


def train(cpu_minutes: float, seed: int) -> tuple[SR3, int]:
    torch.manual_seed(seed)
    method = SR3(NET, sampler={"name": "ddim", "steps": "ddim20"}, scale_factor=SCALE)
    data = ImageDataModule(
        dataset="demo",
        resolution=64,
        batch_size=16,
        degradation=[{"type": "downsample", "scale": SCALE, "method": "bicubic"}],
        demo_samples_per_epoch=10**6,
        seed=seed,
    )
    data.setup("fit")
    optimizer = torch.optim.AdamW(method.net.parameters(), lr=2e-4)
    # The EMA `fit` uses, with its decay warm-up: a bare 0.999 average would still hold 32% of the
    # initial weights (zero output layer included) after 1k steps.
    ema = _ForeachEMAModel(method.net, "cpu", use_buffers=True, decay=0.999)
    deadline, step = time.process_time() + 60 * cpu_minutes, 0
    method.train()
    for batch in data.train_dataloader():
        loss = method.compute_losses(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update_parameters(method.net)
        step += 1
        if step % 200 == 0:
            print(f"step {step:6d}  loss {loss.item():.4f}", flush=True)
        if time.process_time() > deadline:
            break
    method.net.load_state_dict(ema.module.state_dict())
    return method.eval(), step


def centre(image: torch.Tensor, size: int, multiple: int = 1) -> torch.Tensor:
    """The centre size x size region (whole image when size is 0), its corner on a multiple of `multiple`."""
    if not size:
        return image
    top = (image.shape[-2] - size) // 2 // multiple * multiple
    left = (image.shape[-1] - size) // 2 // multiple * multiple
    return image[..., top : top + size, left : left + size]


def evaluate(
    method: SR3, folder: Path, seed: int, crop: int, steps: str
) -> tuple[dict[str, list[float]], list[torch.Tensor]]:
    scores = {name: [] for name in ("bicubic_psnr", "bicubic_ssim", "sr3_psnr", "sr3_ssim")}
    crops = []
    for lr_file in sorted(folder.glob("*_LR.png")):
        hr_image = Image.open(lr_file.with_name(lr_file.name.replace("_LR", "_HR")))
        lr_image = Image.open(lr_file)
        bicubic = to_model_range(lr_image.convert("RGB").resize(hr_image.size, Image.Resampling.BICUBIC))
        # The same region of every image: LR crops on the LR grid, HR crops that region times 4.
        lr = centre(to_model_range(lr_image), crop // SCALE)
        sample = method.sample({"lr": lr}, seed=seed, steps=steps).images
        hr = centre(to_model_range(hr_image), crop, SCALE)
        bicubic = centre(bicubic, crop, SCALE)
        for name, prediction in (("bicubic", bicubic), ("sr3", sample)):
            pred, target = to_8bit(prediction), to_8bit(hr)
            scores[f"{name}_psnr"].append(psnr(pred, target, 255.0, y_channel=True, shave=SCALE).item())
            scores[f"{name}_ssim"].append(ssim(pred, target, 255.0, y_channel=True, shave=SCALE).item())
        top, left = (hr.shape[-2] - 96) // 2, (hr.shape[-1] - 96) // 2
        crops.append(torch.cat([x[..., top : top + 96, left : left + 96] for x in (bicubic, sample, hr)]))
        bicubic_db, sr3_db = scores["bicubic_psnr"][-1], scores["sr3_psnr"][-1]
        print(f"{lr_file.stem:<22} bicubic {bicubic_db:6.2f} dB  SR3 {sr3_db:6.2f} dB", flush=True)
    return scores, crops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=os.environ.get("LIT_DIFFSR_SR_DATA", DEFAULT_ROOT))
    parser.add_argument("--cpu-minutes", type=float, default=10.0, help="training budget in CPU minutes")
    parser.add_argument(
        "--crop", type=int, default=128, help="centre HR crop scored (multiple of 4; 0 = whole)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", default="ddim20", help="sampling respacing (DDIM, eta = 0)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = {name: Path(args.root) / name / "SelfExSR" / f"image_SRF_{SCALE}" for name in ("Set5", "Set14")}
    missing = [str(folder) for folder in folders.values() if not list(folder.glob("*_LR.png"))]
    if missing:
        print(
            f"skipped: no *_LR.png in {', '.join(missing)}; pass --root or set LIT_DIFFSR_SR_DATA to the "
            "folder holding Set5/ and Set14/ (python -m lit_diffsr.data.prepare srtest)"
        )
        sys.exit(0)
    torch.set_num_threads(args.threads)
    method, steps = train(args.cpu_minutes, args.seed)
    lines = [
        "# SR3 x4 on Set5 / Set14 after a fixed CPU budget",
        "",
        f"`python benchmarks/sr3_set5.py --cpu-minutes {args.cpu_minutes:g} --threads {args.threads} "
        f"--steps {args.steps} --crop {args.crop}`: "
        f"{steps} training steps (batch 16, 64x64 HR crops of the bundled photographs, "
        "EMA 0.999 with warm-up), "
        f"UNet {sum(p.numel() for p in method.net.parameters()) / 1e6:.2f} M parameters, DDIM sampling "
        f"({args.steps}, eta 0). Y-channel PSNR (dB) / SSIM, 4 pixels shaved, "
        f"{f'centre {args.crop}x{args.crop} HR crops' if args.crop else 'whole images'}.",
        "",
        "| set | bicubic PSNR | bicubic SSIM | SR3 PSNR | SR3 SSIM |",
        "|---|---|---|---|---|",
    ]
    all_crops = []
    with torch.no_grad():
        for name, folder in folders.items():
            scores, crops = evaluate(method, folder, args.seed, args.crop, args.steps)
            all_crops += crops[:3]
            means = {key: float(np.mean(values)) for key, values in scores.items()}
            lines.append(
                f"| {name} | {means['bicubic_psnr']:.2f} | {means['bicubic_ssim']:.4f} | "
                f"{means['sr3_psnr']:.2f} | {means['sr3_ssim']:.4f} |"
            )
    RESULTS.mkdir(exist_ok=True)
    grid = make_grid(
        ((torch.cat([c[i : i + 1] for i in range(3) for c in all_crops]) + 1) / 2).clamp(0, 1),
        nrow=len(all_crops),
        padding=2,
    )
    save_image(grid, RESULTS / "sr3_set5.png")
    lines += [
        "",
        "Samples: `sr3_set5.png` (rows bicubic | SR3 | HR; 96x96 centre crops of 3 Set5 and 3 Set14 images).",
    ]
    (RESULTS / "sr3_set5.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
