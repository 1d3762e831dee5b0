"""ImageNet (ILSVRC-2012) to square class-folder trees at the ADM / CDM resolutions.

Output: `<dst>/<res>/<split>/<wnid>/<stem>.png` for each `--resolutions` (default 32 64 256) and
split, made by `resize.resize_square` (centre crop, ADM's BOX halvings, then bicubic).

Sources it understands (`--src`):
- official tars unpacked: `train/<wnid>/*.JPEG` and the flat `val/*.JPEG`, labelled by the
  devkit's `ILSVRC2012_validation_ground_truth.txt` (one ILSVRC2012_ID per line, in file order)
  with the devkit's `meta.mat` mapping ILSVRC2012_ID to wnid;
- the Kaggle copy: `ILSVRC/Data/CLS-LOC/{train,val}` and `LOC_val_solution.csv`;
- a `val/` already sorted into `<wnid>/` folders (no label file needed).
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterator
from pathlib import Path

from lit_diffsr.data.io import find_images
from lit_diffsr.data.prepare.engine import CountCheck, Job, Plan, PrepareError, positive_int, square_outputs

NUM_CLASSES = 1000
# ILSVRC-2012 counts: train has 732 to 1300 images per class, 1,281,167 in all; val 50 per class.
EXPECTED = {"train": ((732, 1300), 1_281_167), "val": ((50, 50), 50_000)}
LABEL_FILE_NAMES = ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resolutions", type=positive_int, nargs="+", default=[32, 64, 256], help="output sides in pixels"
    )
    parser.add_argument("--splits", nargs="+", choices=sorted(EXPECTED), default=["train", "val"])
    parser.add_argument(
        "--val-labels",
        type=Path,
        help="LOC_val_solution.csv (Kaggle) or the devkit's ILSVRC2012_validation_ground_truth.txt; "
        "found under --src when omitted",
    )
    parser.add_argument(
        "--synsets",
        type=Path,
        help="for the devkit ground truth: its meta.mat (default: next to the ground-truth file), or a "
        "text file of wnids in ILSVRC2012_ID order (NOT the sorted LOC_synset_mapping.txt)",
    )


def find_split_root(src: Path, split: str) -> Path:
    candidates = [src / split, src / "ILSVRC" / "Data" / "CLS-LOC" / split]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise PrepareError(f"--src has no ImageNet {split!r} folder (looked for {looked}); see data/README.md")


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_val_labels(src: Path) -> Path:
    """The first label file within two folder levels of `src` (not deeper: train/ holds a million files)."""
    for name in LABEL_FILE_NAMES:
        for pattern in (name, f"*/{name}", f"*/*/{name}"):  # e.g. ILSVRC2012_devkit_t12/data/
            found = sorted(src.glob(pattern))
            if found:
                return found[0]
    raise PrepareError(
        f"the ImageNet val folder is flat and no label file ({' or '.join(LABEL_FILE_NAMES)}) was found "
        "under --src; pass --val-labels PATH"
    )


def read_loc_val_solution(path: Path) -> dict[str, str]:
    """Kaggle's LOC_val_solution.csv: ImageId -> first wnid of its PredictionString."""
    with path.open(newline="") as file:
        rows = list(csv.reader(file))
    if not rows or rows[0][:2] != ["ImageId", "PredictionString"]:
        raise PrepareError(f"--val-labels {path}: expected a CSV with header ImageId,PredictionString")
    return {image_id: prediction.split()[0] for image_id, prediction in rows[1:] if prediction.strip()}


def read_synsets(path: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid, from the devkit's meta.mat or a text list in ILSVRC2012_ID order."""
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat  # scipy only for this optional input

        synsets = loadmat(path, squeeze_me=True)["synsets"]
        return {int(entry["ILSVRC2012_ID"]): str(entry["WNID"]) for entry in synsets}
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(wnids) == NUM_CLASSES and wnids == sorted(wnids):
        raise PrepareError(
            f"--synsets {path} lists the wnids sorted, which is the Kaggle/torchvision order, not the "
            "ILSVRC2012_ID order the ground-truth file uses; pass the devkit's data/meta.mat"
        )
    return {index: wnid for index, wnid in enumerate(wnids, start=1)}


def read_devkit_ground_truth(path: Path, synsets: Path | None) -> dict[str, str]:
    """ILSVRC2012_val_%08d (line number) -> wnid of the line's ILSVRC2012_ID."""
    synsets = synsets or path.parent / "meta.mat"
    if not synsets.is_file():
        raise PrepareError(
            f"{path} needs the ILSVRC2012_ID -> wnid mapping: pass --synsets (devkit meta.mat)"
        )
    wnid_of_id = read_synsets(synsets)
    labels = {}
    for number, line in enumerate(path.read_text().split(), start=1):
        if int(line) not in wnid_of_id:
            raise PrepareError(f"{path}, line {number}: ILSVRC2012_ID {line} is not in --synsets {synsets}")
        labels[f"ILSVRC2012_val_{number:08d}"] = wnid_of_id[int(line)]
    return labels


def read_val_labels(path: Path, synsets: Path | None) -> dict[str, str]:
    """Image stem -> wnid for the flat validation folder."""
    if not path.is_file():
        raise PrepareError(f"--val-labels {path} does not exist")
    if path.suffix.lower() == ".csv":
        return read_loc_val_solution(path)
    return read_devkit_ground_truth(path, synsets)


def list_split(src: Path, split: str, args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[dict]]:
    """(wnid, image path) pairs of a split, and the images that could not be labelled.

    Paths are kept as strings: a million Path objects would take gigabytes.
    """
    root = find_split_root(src, split)
    folders = class_folders(root)
    if folders:
        return [(folder.name, str(image)) for folder in folders for image in find_images(folder, False)], []
    if split == "train":
        raise PrepareError(f"{root} holds no class folders; unpack each <wnid>.tar into {root}/<wnid>/")
    labels = read_val_labels(args.val_labels or find_val_labels(src), args.synsets)
    labelled, unlabelled = [], []
    for image in find_images(root, recursive=False):
        if image.stem in labels:
            labelled.append((labels[image.stem], str(image)))
        else:
            unlabelled.append(
                {"source": str(image), "reason": "no label for this image in the val label file"}
            )
    return labelled, unlabelled


def plan(args: argparse.Namespace, src: Path, dst: Path) -> Plan:
    resolutions = sorted(set(args.resolutions))
    sources = {}
    failed = []
    for split in args.splits:
        sources[split], unlabelled = list_split(src, split, args)
        failed += unlabelled

    def jobs() -> Iterator[Job]:
        for split, items in sources.items():
            for wnid, image in items:
                yield Job(image, square_outputs(dst, Path(split, wnid), Path(image).stem, resolutions))

    checks = [
        CountCheck(split, dst / str(res) / split, EXPECTED[split][0], True, NUM_CLASSES, EXPECTED[split][1])
        for res in resolutions
        for split in args.splits
    ]
    return Plan(
        jobs(),
        total=sum(len(items) for items in sources.values()),
        checks=checks,
        failed_sources=failed,
    )
