"""DIV2K (NTIRE 2017) HR images and their official bicubic LR into the paired layout.

Source (`--src`, the official zips unpacked side by side, optionally inside a `DIV2K/` folder):
`DIV2K_{train,valid}_HR/0001.png` and `DIV2K_{train,valid}_LR_bicubic/X{s}/0001x{s}.png`.

Output, one folder per split with HR and LR under the same file names:

    <dst>/DIV2K/train/HR/0001.png ... 0800.png
    <dst>/DIV2K/train/LR_bicubic/X2/0001.png        (X3, X4 likewise, one per --scales)
    <dst>/DIV2K/valid/HR/0801.png ... 0900.png
    <dst>/DIV2K/valid/LR_bicubic/X4/0801.png

The pixels are the official ones, unchanged (plain RGB PNGs are copied byte for byte). Every LR is
checked to be exactly 1/s of its HR in both sides, the pairing the paired DataModule relies on; a
pair that is not is listed in the report instead of being written.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from PIL import Image

from lit_diffsr.data.io import find_images, load_rgb, read_image_size
from lit_diffsr.data.prepare.engine import CountCheck, Job, Output, Plan, PrepareError, add_scales_argument

IMAGES = {"train": 800, "valid": 100}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scales_argument(parser, "official bicubic LR factors to pair")
    parser.add_argument("--splits", nargs="+", choices=sorted(IMAGES), default=["train", "valid"])


def load_paired_lr(lr_path: str, hr_path: str, scale: int) -> Image.Image:
    """Decode the LR after checking that its HR is exactly `scale` times larger in both sides."""
    lr_size, hr_size = read_image_size(lr_path), read_image_size(hr_path)
    if (lr_size[0] * scale, lr_size[1] * scale) != hr_size:
        raise ValueError(
            f"LR is {lr_size[1]}x{lr_size[0]}, HR {hr_path} is {hr_size[1]}x{hr_size[0]}: not x{scale}"
        )
    return Image.fromarray(load_rgb(lr_path))


def lr_folders(root: Path, split: str, scales: list[int]) -> list[Path]:
    return [root / f"DIV2K_{split}_LR_bicubic" / f"X{scale}" for scale in scales]


def find_root(src: Path) -> Path:
    for root in (src, src / "DIV2K"):
        if any(root.glob("DIV2K_*_HR")):
            return root
    raise PrepareError(
        f"--src {src} has no DIV2K_train_HR or DIV2K_valid_HR folder; unpack the official zips there"
    )


def plan(args: argparse.Namespace, src: Path, dst: Path) -> Plan:
    root, out = find_root(src), dst / "DIV2K"
    scales = sorted(set(args.scales))
    pairs: list[tuple[str, Path]] = []  # (split, HR image)
    for split in args.splits:
        hr_folder = root / f"DIV2K_{split}_HR"
        missing = [
            str(folder) for folder in [hr_folder, *lr_folders(root, split, scales)] if not folder.is_dir()
        ]
        if missing:
            raise PrepareError(
                f"missing DIV2K folders: {', '.join(missing)}; unpack their zips or drop the "
                "split (--splits) or scale (--scales)"
            )
        pairs += [(split, hr) for hr in find_images(hr_folder, recursive=False)]

    def jobs() -> Iterator[Job]:
        for split, hr in pairs:
            yield Job(str(hr), (Output(out / split / "HR" / f"{hr.stem}.png"),))
            for scale, lr_folder in zip(scales, lr_folders(root, split, scales), strict=True):
                lr = lr_folder / f"{hr.stem}x{scale}.png"
                output = Output(out / split / "LR_bicubic" / f"X{scale}" / f"{hr.stem}.png")
                yield Job(str(lr), (output,), load=partial(load_paired_lr, str(lr), str(hr), scale))

    checks = [
        CountCheck(split, out / split / folder, (IMAGES[split], IMAGES[split]))
        for split in args.splits
        for folder in ["HR", *(f"LR_bicubic/X{scale}" for scale in scales)]
    ]
    return Plan(jobs(), total=len(pairs) * (1 + len(scales)), checks=checks)
