"""The classic SR test sets (Set5, Set14, BSD100, Urban100) as HR/LR pairs for each scale.

Source (`--src`): one folder per set (`Set5`, `Set14`, `BSD100` or `B100`, `Urban100`; any case),
holding the HR images either in `HR/`, `original/` or directly, or in the SelfExSR release's layout
(Huang et al. 2015): `<Set>/SelfExSR/image_SRF_<s>/img_<n>_SRF_<s>_HR.png`, of which the HR images of the
smallest s are read (the least cropped; the other files there are other methods' outputs) and named `img_<n>`.

Output, a self-contained pair of folders per set and scale:

    <dst>/<Set>/X<s>/HR/<stem>.png    HR cropped to a multiple of s (right/bottom remainder dropped)
    <dst>/<Set>/X<s>/LR/<stem>.png    PIL's anti-aliased bicubic downscale of that HR by s

Grayscale images (Set14's bridge) become three equal channels. The LR comes from PIL, not MATLAB's
imresize that most SR papers used; on Set5 and Set14 the two LRs agree to 53-55 dB PSNR on average.
"""

from __future__ import annotations

import argparse
import re
from functools import partial
from pathlib import Path

from lit_diffsr.data.io import find_images
from lit_diffsr.data.prepare.engine import CountCheck, Job, Output, Plan, PrepareError, add_scales_argument
from lit_diffsr.data.prepare.resize import bicubic_downscale, crop_to_multiple

IMAGES = {"Set5": 5, "Set14": 14, "BSD100": 100, "Urban100": 100}
FOLDER_NAMES = {
    "Set5": ["set5"],
    "Set14": ["set14"],
    "BSD100": ["bsd100", "b100", "bsds100"],
    "Urban100": ["urban100"],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scales_argument(parser, "downscale factors, one X<s> per factor")
    parser.add_argument("--sets", nargs="+", choices=list(IMAGES), default=list(IMAGES))


SELFEXSR_HR = re.compile(r"(.+)_SRF_\d+_HR")


def selfexsr_hr_images(set_folder: Path) -> list[Path]:
    """The `*_HR.png` of the smallest-factor `SelfExSR/image_SRF_<s>/` folder, or [] when there is none."""
    folders = sorted(
        (int(match.group(1)), folder)
        for folder in (set_folder / "SelfExSR").glob("image_SRF_*")
        if (match := re.fullmatch(r"image_SRF_(\d+)", folder.name)) and folder.is_dir()
    )
    for _, folder in folders:
        images = sorted(path for path in folder.glob("*_HR.png") if SELFEXSR_HR.fullmatch(path.stem))
        if images:
            return images
    return []


def output_stem(image: Path) -> str:
    """The name an HR source gets in <dst>: its stem, without SelfExSR's `_SRF_<s>_HR` suffix."""
    match = SELFEXSR_HR.fullmatch(image.stem)
    return match.group(1) if match else image.stem


def find_hr_images(src: Path, name: str) -> list[Path]:
    """A set's HR images: SelfExSR's layout, else the images of `find_hr_folder`."""
    for folder in src.iterdir():
        if folder.is_dir() and folder.name.lower() in FOLDER_NAMES[name]:
            images = selfexsr_hr_images(folder)
            if images:
                return images
    return find_images(find_hr_folder(src, name), recursive=False)


def find_hr_folder(src: Path, name: str) -> Path:
    """The folder holding a set's HR images: <Set>/HR, <Set>/original or <Set> itself."""
    set_folders = [p for p in src.iterdir() if p.is_dir() and p.name.lower() in FOLDER_NAMES[name]]
    for folder in set_folders:
        for candidate in (folder / "HR", folder / "original", folder):
            if candidate.is_dir() and find_images(candidate, recursive=False):
                return candidate
    raise PrepareError(
        f"--src {src} has no {name} images (looked for a folder named {' or '.join(FOLDER_NAMES[name])}, "
        f"any case, with the images in HR/, original/, SelfExSR/image_SRF_<s>/ or directly); choose the "
        "sets you have with --sets"
    )


def pair_outputs(set_folder: Path, stem: str, scales: list[int]) -> tuple[Output, ...]:
    """`<set_folder>/X<s>/HR/<stem>.png` (modcropped) and `.../LR/<stem>.png` (bicubic) for each scale."""
    makers = (("HR", crop_to_multiple), ("LR", bicubic_downscale))
    return tuple(
        Output(set_folder / f"X{scale}" / kind / f"{stem}.png", partial(make, scale=scale))
        for scale in scales
        for kind, make in makers
    )


def plan(args: argparse.Namespace, src: Path, dst: Path) -> Plan:
    scales = sorted(set(args.scales))
    sources = {name: find_hr_images(src, name) for name in args.sets}
    jobs = (
        Job(str(image), pair_outputs(dst / name, output_stem(image), scales))
        for name, images in sources.items()
        for image in images
    )
    checks = [
        CountCheck(name, dst / name / f"X{scale}" / kind, (IMAGES[name], IMAGES[name]))
        for name in args.sets
        for scale in scales
        for kind in ("HR", "LR")
    ]
    total = sum(len(images) for images in sources.values())
    return Plan(jobs, total=total, checks=checks)
