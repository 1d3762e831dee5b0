"""I²SB 4x SR after a fixed CPU training budget: PSNR / SSIM on Set5 (Y channel, 4 px shaved) for several NFE,
against the bicubic x1 the bridge starts from.

    python benchmarks/i2sb_set5.py [--root DIR] [--minutes 9] [--threads 2] [--nfe 1 2 5 10 100] [--run DIR]

1. Trains `experiment=i2sb_quickstart` (64 px crops of the bundled photographs) through the CLI for
   `--minutes` of wall-clock time on `--threads` CPU threads (skipped when --run holds a trained run).
2. Super-resolves the LR images of DIR/Set5/SelfExSR/image_SRF_4 (DIR: $LIT_DIFFSR_SR_DATA or
   <paths.data_dir>/sr). The net was trained on 64 px crops, so each image is processed as 64 px HR tiles
   (the last row / column of tiles aligned to the border) and stitched; x1 = bicubic upsampling of the LR.
3. Prints a Markdown table and writes it to benchmarks/results/i2sb_set5.md (or --out).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lit_diffsr.methods.i2sb import I2SB
from lit_diffsr.metrics.image import psnr, ssim
from lit_diffsr.runtime import configured_data_dir

# The SelfExSR release of the SR test sets (MATLAB-bicubic LR): <paths.data_dir>/sr/<Set>/SelfExSR/.
DEFAULT_ROOT = configured_data_dir() / "sr"
REPO = Path(__file__).resolve().parents[1]
SCALE, TILE = 4, 64


def train(run: Path, minutes: float, threads: int) -> None:
    """Fit the quickstart for a fixed wall-clock budget (Lightning's max_time), checkpointing often."""
    budget = time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable, "-m", "lit_diffsr", "fit", "experiment=i2sb_quickstart", f"num_threads={threads}",
        f"paths.output_dir={run}", f"+trainer.max_time={budget}", "trainer.max_steps=-1",
        "trainer.limit_val_batches=0", "callbacks.checkpoint.every_n_train_steps=20",
        "callbacks.progress=null",
        # A budget of a few hundred steps: a short EMA horizon, or the average still weighs the initial net.
        "callbacks.ema.decay=0.95",
    ]  # fmt: skip
    subprocess.run(command, cwd=REPO, env=env, check=True)


def load_image(path: Path) -> torch.Tensor:
    """RGB PNG -> (1, 3, H, W) float32 in [-1, 1]."""
    array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def tile_starts(size: int, tile: int) -> list[int]:
    """Tile offsets covering [0, size): a stride of `tile`, the last tile flush with the border."""
    starts = list(range(0, size - tile + 1, tile))
    return starts if starts[-1] + tile == size else [*starts, size - tile]


@torch.no_grad()
def super_resolve(method, lr: torch.Tensor, seed: int, nfe: int) -> torch.Tensor:
    """Run the method on every 64 px HR tile (16 px LR tile) of one image and stitch the results."""
    height, width = lr.shape[-2] * SCALE, lr.shape[-1] * SCALE
    out = torch.zeros(1, 3, height, width)
    lr_tile = TILE // SCALE
    boxes = [
        (top, left)
        for top in tile_starts(lr.shape[-2], lr_tile)
        for left in tile_starts(lr.shape[-1], lr_tile)
    ]
    tiles = torch.cat([lr[..., t : t + lr_tile, s : s + lr_tile] for t, s in boxes])
    condition = {"lr": tiles, "hr": torch.zeros(len(tiles), 3, TILE, TILE)}
    samples = method.sample(condition, seed=seed, steps=nfe).images
    for (top, left), sample in zip(boxes, samples, strict=True):
        out[..., top * SCALE : top * SCALE + TILE, left * SCALE : left * SCALE + TILE] = sample
    return out


def scores(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    # As 8-bit files: quantise to 256 levels first, then Y-channel PSNR / SSIM with `scale` pixels shaved.
    pred = ((pred.clamp(-1, 1) + 1) * 127.5).round()
    target = ((target + 1) * 127.5).round()
    return (
        psnr(pred, target, 255.0, y_channel=True, shave=SCALE).item(),
        ssim(pred, target, 255.0, y_channel=True, shave=SCALE).item(),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default=os.environ.get("LIT_DIFFSR_SR_DATA", DEFAULT_ROOT))
    parser.add_argument("--minutes", type=float, default=9.0, help="training budget (wall clock)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 5, 10, 100])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "benchmark_i2sb_set5")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "i2sb_set5.md")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    folder = Path(args.root) / "Set5" / "SelfExSR" / f"image_SRF_{SCALE}"
    lr_files = sorted(folder.glob("*_LR.png"))
    if not lr_files:
        sys.exit(
            f"no *_LR.png in {folder}; pass --root or set LIT_DIFFSR_SR_DATA to the folder holding Set5/"
        )
    torch.set_num_threads(args.threads)
    checkpoint = args.run / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        train(args.run, args.minutes, args.threads)
    # weights_only=False: the DataModule's hyper-parameters hold an OmegaConf ListConfig (the degradation
    # list), which torch's safe loader refuses; this checkpoint was written by this very script.
    method = I2SB.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False).eval()
    steps = torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"]

    images = [(load_image(f), load_image(f.with_name(f.name.replace("_LR", "_HR")))) for f in lr_files]
    header = [
        f"# I²SB 4x SR on Set5 (Y channel, shave {SCALE}) after {args.minutes:g} min of CPU training",
        "",
        f"`experiment=i2sb_quickstart`, {args.threads} threads, {steps} training steps (batch 16, 64 px "
        "crops of the bundled photographs), EMA weights, 64 px tiles, sampling seed "
        f"{args.seed}. Command: `python benchmarks/i2sb_set5.py`.",
        "",
        "| method | PSNR (dB) | SSIM | " + " | ".join(f.stem.replace("_LR", "") for f in lr_files) + " |",
        "|---|---|---|" + "---|" * len(lr_files),
    ]
    bicubic = [scores(method.degraded_endpoint({"lr": lr, "hr": hr})[0], hr) for lr, hr in images]
    rows = {"bicubic (x1)": bicubic}
    write_table(args.out, header, rows)
    for nfe in args.nfe:
        started = time.time()
        rows[f"I²SB NFE {nfe}"] = [scores(super_resolve(method, lr, args.seed, nfe), hr) for lr, hr in images]
        print(f"NFE {nfe}: {time.time() - started:.0f} s", flush=True)
        write_table(args.out, header, rows)  # after every row: a long run leaves the finished ones behind
    print(args.out.read_text())


def write_table(path: Path, header: list[str], rows: dict[str, list[tuple[float, float]]]) -> None:
    lines = list(header)
    for name, values in rows.items():
        psnrs, ssims = zip(*values, strict=True)
        per_image = " | ".join(f"{p:.2f}" for p in psnrs)
        lines.append(f"| {name} | {np.mean(psnrs):.2f} | {np.mean(ssims):.4f} | {per_image} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
