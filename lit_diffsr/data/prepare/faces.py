"""FFHQ and CelebA-HQ to flat folders at the SR3 face resolutions (16 and 128 by default).

Output: `<dst>/<res>/<stem>.png` for each `--resolutions`, every one made from the source by
`resize.resize_square` (the sources are already square, so the crop is a no-op). SR3 (Saharia et
al. 2021) trains 16 -> 128 on FFHQ and evaluates on CelebA-HQ. Each resolution comes from the
source directly, as ADM built its resolutions; a DataModule that needs the LR to be exactly the
degraded HR can derive it on the fly from the 128 folder.

Sources: every image below `--src`, in sub-folders too (FFHQ's `images1024x1024/00000/00000.png`,
CelebA-HQ's `CelebA-HQ-img/0.jpg` or `data1024x1024/00000.png`). File stems must be unique.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_diffsr.data.io import find_images
from lit_diffsr.data.prepare.engine import CountCheck, Job, Plan, PrepareError, positive_int, square_outputs

EXPECTED_IMAGES = {"ffhq": 70_000, "celebahq": 30_000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resolutions", type=positive_int, nargs="+", default=[16, 128], help="output sides in pixels"
    )


def plan(args: argparse.Namespace, src: Path, dst: Path) -> Plan:
    images = find_images(src)
    first_with_stem: dict[str, Path] = {}
    for image in images:
        if image.stem in first_with_stem:
            raise PrepareError(
                f"two source images share the name {image.stem!r} ({first_with_stem[image.stem]} and "
                f"{image}); the output folders are flat, so point --src at a tree with unique file names"
            )
        first_with_stem[image.stem] = image
    resolutions = sorted(set(args.resolutions))
    jobs = (Job(str(image), square_outputs(dst, "", image.stem, resolutions)) for image in images)
    count = EXPECTED_IMAGES[args.dataset]
    checks = [CountCheck(args.dataset, dst / str(res), (count, count)) for res in resolutions]
    return Plan(jobs, total=len(images), checks=checks)
