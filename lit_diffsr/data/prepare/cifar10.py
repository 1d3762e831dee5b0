"""CIFAR-10 to class folders: `<dst>/{train,test}/<class>/<name>.png` (32 x 32 RGB).

Two sources (`--src`):
- the official "python version" (cifar-10-python.tar.gz unpacked): `data_batch_1` .. `data_batch_5`
  and `test_batch` (in `--src` or `--src/cifar-10-batches-py`). Each is a pickled dict with
  `data`, a uint8 array of shape (N, 3072) whose rows hold the 1024 red, then green, then blue
  values of a 32 x 32 image in row-major order, and `labels` (0-9); `batches.meta` names the
  classes. Images are written as `<index>.png`, the index counting through the split in batch order
  (train 00000-49999, test 00000-09999), so the order of the official arrays is kept.
- a tree `train|test/<class>/*.png|jpg` (e.g. an export of the official batches): each image is
  written under its own stem, grayscale expanded to RGB.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from lit_diffsr.data.io import find_images
from lit_diffsr.data.prepare.engine import CountCheck, Job, Output, Plan, PrepareError
from lit_diffsr.safe_load import load_pickled_arrays

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
BATCHES = {"train": [f"data_batch_{number}" for number in range(1, 6)], "test": ["test_batch"]}
IMAGES_PER_CLASS = {"train": 5000, "test": 1000}
SIDE = 32


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options beyond the common ones


def image_from_row(row: np.ndarray) -> Image.Image:
    """One row of a batch's `data`: channel planes R, G, B of 32 x 32, row-major -> RGB image."""
    return Image.fromarray(row.reshape(3, SIDE, SIDE).transpose(1, 2, 0))


def read_pickle(path: Path) -> dict:
    # The official files were pickled by Python 2, so encoding="bytes" is needed and their keys come back
    # as bytes. Arrays and plain containers only: a file naming anything else is refused, not run.
    return load_pickled_arrays(path, what="--src", encoding="bytes")


def find_batch_folder(src: Path) -> Path | None:
    for folder in (src, src / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
            return folder
    return None


def read_class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return CLASS_NAMES
    return tuple(name.decode() for name in read_pickle(meta)[b"label_names"])


def pickle_jobs(folder: Path, dst: Path, failed: list[dict[str, str]]) -> tuple[list[Job], int]:
    """One job per image of every batch that loads; a batch that does not is added to `failed`."""
    class_names = read_class_names(folder)
    jobs = []
    for split, batch_names in BATCHES.items():
        index = 0
        for batch_name in batch_names:
            path = folder / batch_name
            try:
                batch = read_pickle(path)
                data, labels = np.asarray(batch[b"data"], dtype=np.uint8), list(batch[b"labels"])
                if data.shape != (len(labels), 3 * SIDE * SIDE):
                    raise ValueError(
                        f"data has shape {data.shape}, expected ({len(labels)}, {3 * SIDE * SIDE})"
                    )
            except Exception as error:  # a missing or damaged batch is reported, the others still run
                failed.append({"source": str(path), "reason": f"{type(error).__name__}: {error}"})
                continue
            for row, label in zip(data, labels, strict=True):
                output = Output(dst / split / class_names[label] / f"{index:05d}.png")
                jobs.append(Job(f"{path}[{index}]", (output,), load=partial(image_from_row, row)))
                index += 1
    return jobs, len(jobs)


def tree_jobs(src: Path, dst: Path) -> tuple[Iterator[Job], int]:
    images = [
        (split, folder.name, image)
        for split in BATCHES
        if (src / split).is_dir()
        for folder in sorted((src / split).iterdir())
        if folder.is_dir()
        for image in find_images(folder)
    ]
    jobs = (
        Job(str(image), (Output(dst / split / name / f"{image.stem}.png"),)) for split, name, image in images
    )
    return jobs, len(images)


def plan(args: argparse.Namespace, src: Path, dst: Path) -> Plan:
    failed: list[dict[str, str]] = []
    batch_folder = find_batch_folder(src)
    if batch_folder is not None:
        jobs, total = pickle_jobs(batch_folder, dst, failed)
    elif (src / "train").is_dir() or (src / "test").is_dir():
        jobs, total = tree_jobs(src, dst)
    else:
        raise PrepareError(
            f"--src {src} holds neither the CIFAR-10 python batches (data_batch_1 .. 5, test_batch) nor a "
            "train|test/<class>/ image tree"
        )
    checks = [
        CountCheck(split, dst / split, (count, count), class_folders=True, num_classes=len(CLASS_NAMES))
        for split, count in IMAGES_PER_CLASS.items()
    ]
    return Plan(jobs, total, checks, failed_sources=failed)
