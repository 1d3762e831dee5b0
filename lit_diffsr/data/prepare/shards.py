"""`python -m lit_diffsr.data.prepare shards --src PREPARED --dst SHARDS`: folder trees -> shard sets.

The folders are listed exactly as the DataModule lists them (`ImageFolderDataset`, `PairedFolderDataset`),
so the shards hold the same items: labels in the training set's class order, names = file stems, pairs
matched and size-checked. When `--src` has `train/` (and `val/`, `test/`) sub-folders, each becomes a shard
set of the same name under `--dst`; otherwise `--src` becomes one shard set at `--dst` (the DataModule then
holds out its validation items by seed, as for a folder).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_diffsr.data.prepare.engine import PrepareError

SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--src", type=Path, required=True, help="a prepared folder (HR folder for pairs)")
    parser.add_argument("--dst", type=Path, required=True, help="output folder of the shard set(s)")
    parser.add_argument(
        "--layout",
        choices=("auto", "classes", "images", "paired"),
        default="auto",
        help="classes: one sub-folder per class; images: unlabelled; paired: --src HR with --lr-src LR; "
        "auto: classes when the folder holds only sub-folders, else images",
    )
    parser.add_argument("--lr-src", type=Path, help="the LR folder of a paired set (same layout as --src)")
    parser.add_argument("--scale", type=int, help="the SR factor of a paired set (default: inferred)")
    parser.add_argument(
        "--chunk-bytes",
        default="64MB",
        help="size of one chunk file (litdata's chunk_bytes, e.g. 64MB; default 64MB: few files, each "
        "large enough to stream well from a parallel file system or a bucket)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the order items are stored in")
    parser.add_argument(
        "--encoding",
        choices=("file", "raw"),
        default="file",
        help="file: each image file's bytes, decoded when read (the smallest); raw: decoded uint8 pixels, "
        "nothing to decode when read (for 32 / 64-px sets, where decoding costs more than reading)",
    )


def _splits(src: Path) -> list[tuple[str, Path]]:
    """(name, folder) of each split to write: train/val/test sub-folders, or the folder itself."""
    found = [(split, src / split) for split in SPLITS if (src / split).is_dir()]
    return found if found else [("", src)]


def run(args: argparse.Namespace, src: Path, dst: Path) -> int:
    """Write the shard sets; returns how many items were written."""
    from lit_diffsr.data.datasets import DatasetLayoutError, ImageFolderDataset, PairedFolderDataset
    from lit_diffsr.data.shards import ShardRecord, write_shards

    if (args.layout == "paired") != (args.lr_src is not None):
        raise PrepareError("--lr-src and --layout paired go together (an LR folder for an HR folder)")
    lr_root = args.lr_src.expanduser().resolve() if args.lr_src is not None else None
    written, classes = 0, None
    for split, folder in _splits(src):
        try:
            if lr_root is not None:
                lr_folder = lr_root / split if split else lr_root
                scale = args.scale or PairedFolderDataset.infer_scale(folder, lr_folder)
                pairs = PairedFolderDataset(folder, lr_folder, scale, None, train=False).pairs
                records = [ShardRecord(hr, hr.stem, lr=lr) for hr, lr in pairs]
                kind, set_classes = "paired", None
            else:
                by_class = {"auto": "auto", "classes": True, "images": False}[args.layout]
                images = ImageFolderDataset(folder, class_folders=by_class, classes=classes)
                labels = images.labels or [None] * len(images.files)
                pairs = zip(images.files, labels, strict=True)
                records = [ShardRecord(file, file.stem, label) for file, label in pairs]
                kind, set_classes, scale = ("classes" if images.classes else "images"), images.classes, None
                classes = classes or images.classes  # val and test use the training set's class order
        except (DatasetLayoutError, ValueError) as error:
            raise PrepareError(str(error)) from error
        target = dst / split if split else dst
        chunks = write_shards(
            records, target, kind, set_classes, scale, args.chunk_bytes, args.seed, args.encoding
        )
        print(f"{target}: {len(records)} {kind} items in {chunks} chunk file(s)")
        written += len(records)
    return written
