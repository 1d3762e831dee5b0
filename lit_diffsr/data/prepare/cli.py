"""`python -m lit_diffsr.data.prepare <dataset> --src DOWNLOAD --dst PREPARED [options]`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import ModuleType

from rich.console import Console

from lit_diffsr.data.prepare import cifar10, div2k, faces, imagenet, shards, srtest
from lit_diffsr.data.prepare.engine import PrepareError, execute, positive_int

# name -> (one-line description, module with add_arguments(parser) and plan(args, src, dst))
DATASETS: dict[str, tuple[str, ModuleType]] = {
    "imagenet": ("ILSVRC-2012 train/val -> <dst>/<res>/<split>/<wnid>/*.png (ADM resize)", imagenet),
    "ffhq": ("FFHQ -> <dst>/<res>/*.png (SR3 faces, 16 and 128)", faces),
    "celebahq": ("CelebA-HQ -> <dst>/<res>/*.png (SR3 faces, 16 and 128)", faces),
    "div2k": ("DIV2K HR + official bicubic LR -> <dst>/DIV2K/<split>/{HR,LR_bicubic/X<s>}/*.png", div2k),
    "srtest": ("Set5, Set14, BSD100, Urban100 -> <dst>/<Set>/X<s>/{HR,LR}/*.png", srtest),
    "cifar10": ("CIFAR-10 python batches or image tree -> <dst>/<split>/<class>/*.png", cifar10),
}

SHARDS_HELP = "a prepared folder tree (classes, images, or HR + LR pairs) -> litdata shard sets"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--src", type=Path, required=True, help="the downloaded dataset; only read, never modified"
    )
    common.add_argument(
        "--dst", type=Path, required=True, help="output folder, e.g. ${paths.data_dir}/imagenet"
    )
    common.add_argument(
        "--workers",
        type=positive_int,
        default=min(4, os.cpu_count() or 1),
        help="processes (default: min(4, cpus))",
    )
    common.add_argument(
        "--expect",
        nargs="+",
        action="extend",
        metavar="[KEY=]N[-M]",
        help="override the expected files per class (or per folder) for a subset, e.g. train=10 val=2 "
        "or 5-10; KEY is a split or set name, none means all; the number of classes is then not checked",
    )
    common.add_argument(
        "--report-only",
        action="store_true",
        help="exit with status 0 even when counts mismatch or sources are unusable (they are still reported)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m lit_diffsr.data.prepare",
        description="Prepare a downloaded dataset for lit_diffsr (see data/README.md). Resumable: run it "
        "again to finish an interrupted run; finished files are skipped. Exit status 1 flags count "
        "mismatches or unusable sources, listed in <dst>/prepare_report.json.",
    )
    subparsers = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name, (description, module) in DATASETS.items():
        subparser = subparsers.add_parser(name, parents=[common], help=description, description=description)
        module.add_arguments(subparser)
    shards.add_arguments(subparsers.add_parser("shards", help=SHARDS_HELP, description=shards.__doc__))
    return parser


def check_locations(src_argument: Path, dst_argument: Path) -> tuple[Path, Path]:
    """Resolved --src and --dst; neither may lie inside the other, so outputs never land in the source."""
    src, dst = src_argument.expanduser().resolve(), dst_argument.expanduser().resolve()
    if not src.is_dir():
        raise PrepareError(
            f"--src {src_argument} does not exist or is not a folder; download and unpack the dataset first "
            "(data/README.md says where from)"
        )
    if dst == src or src in dst.parents:
        raise PrepareError(
            f"--dst {dst_argument} is inside --src {src_argument}; the source is never written to, "
            "choose a destination outside it"
        )
    if dst in src.parents:
        raise PrepareError(
            f"--src {src_argument} is inside --dst {dst_argument}; keep downloads and prepared data apart, "
            "e.g. --src ~/downloads/imagenet --dst <data_dir>/imagenet"
        )
    return src, dst


def main(argv: list[str] | None = None) -> int:
    """Run one preparation; returns the exit status (0 ok, 1 problems reported, 2 usage error)."""
    args = build_parser().parse_args(argv)
    console = Console(stderr=True)
    try:
        src, dst = check_locations(args.src, args.dst)
        if args.dataset == "shards":
            shards.run(args, src, dst)
            return 0
        plan = DATASETS[args.dataset][1].plan(args, src, dst)
        if plan.total == 0 and not plan.failed_sources:
            raise PrepareError(f"found no {args.dataset} images under --src {args.src}; see data/README.md")
        options = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        result = execute(
            plan,
            dataset=args.dataset,
            dst=dst,
            workers=args.workers,
            expect=args.expect,
            options=options,
            console=console,
        )
    except PrepareError as error:
        print(f"prepare {args.dataset}: error: {error}", file=sys.stderr)
        return 2
    return 0 if result.ok or args.report_only else 1
