"""Sharded data sets: the images of a folder tree packed into litdata's optimised chunks.

A shard set is one folder (or object-store prefix) holding litdata's `index.json` and its `chunk-*.bin`
files; `index.json` carries our own entry, `lit_diffsr`, with the format version, the kind of data set
(`images`, `classes`, `paired`), the class names, the encoding and the number of items. Each item is a
dict: the image file's own bytes (`hr`, and `lr` for pairs, so pixels decode exactly as from the folder;
or with `encoding="raw"` its decoded pixels), their CRC-32 (`crc`: a flipped bit in a shard is caught,
not trained on), the class (`y`, -1 without one) and the file stem (`name`).

Reading goes through `litdata.StreamingDataset` by index: our `SeededSampler` keeps choosing the order
(per-item seeds, DDP split, exact resume as for folders) and visits one chunk at a time (`chunk_groups`),
so an epoch opens a few hundred chunk files instead of one file per image. Local paths are read in place;
`s3://`, `gs://`, `azure://`, `hf://` URLs are streamed by litdata into a local cache; `file://PATH` goes
the same way (litdata's `local:` source), which is how the object-store path is tested without a network.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from lit_diffsr.data.datasets import (
    ItemKey,
    RandomSplit,
    as_degradation,
    crop_pair,
    item_rng,
    keep_readable,
    serve_image,
)
from lit_diffsr.data.degradations import Degradation
from lit_diffsr.data.io import decode_rgb, load_rgb
from lit_diffsr.data.transforms import CropTransform, PairAugmentation
from lit_diffsr.errors import ConfigError

SHARDS_FORMAT = "lit_diffsr.shards"
SHARDS_VERSION = 1
KINDS = ("images", "classes", "paired")
# "file": each image file's own bytes, decoded when read; "raw": its decoded uint8 pixels (no decoding when
# read; 1.4-1.9x the size of the demo photos' PNGs: for the 32 / 64-px sets, where decoding dominates).
ENCODINGS = ("file", "raw")
INDEX_NAME = "index.json"  # litdata's
OBJECT_STORE_PREFIXES = ("s3://", "gs://", "r2://", "azure://", "hf://")
HOW_TO_WRITE = "write shards with `python -m lit_diffsr.data.prepare shards --src FOLDER --dst SHARDS`"


@dataclass(frozen=True)
class ShardRecord:
    """One item to write: the image file(s) and what the folder data set knows of them."""

    hr: Path
    name: str
    label: int | None = None
    lr: Path | None = None


def join(root: str, child: str) -> str:
    """`root/child` for a path or a URL."""
    return f"{str(root).rstrip('/')}/{child}"


def local_source(root: str) -> Path | None:
    """The folder a local path or a `file://` URL names; None for an object store."""
    if str(root).startswith(OBJECT_STORE_PREFIXES):
        return None
    return Path(str(root).removeprefix("file://"))


def shard_set_exists(root: str) -> bool:
    """Whether `root` holds a shard set (object stores: assumed, litdata says otherwise when opened)."""
    folder = local_source(root)
    return folder is None or (folder / INDEX_NAME).is_file()


# ---------------------------------------------------------------------------------------------- writing


def write_shards(
    records: Sequence[ShardRecord],
    dst: Path,
    kind: str,
    classes: Sequence[str] | None = None,
    scale: int | None = None,
    chunk_bytes: str | int = "64MB",
    seed: int = 0,
    encoding: str = "file",
) -> int:
    """Pack `records` into a shard set at `dst` (written under a temporary name, then renamed); returns the
    number of chunk files. The items are stored in a permutation seeded by `seed`, so that each chunk is a
    random sample of the set and reading chunk by chunk still mixes classes."""
    from litdata.streaming.writer import BinaryWriter

    if kind not in KINDS or encoding not in ENCODINGS:
        raise ValueError(
            f"shard kind / encoding must be in {KINDS} / {ENCODINGS}, got {kind!r} / {encoding!r}"
        )
    encode = (lambda path: path.read_bytes()) if encoding == "file" else load_rgb
    if not records:
        raise ConfigError(f"no images to write to {dst}")
    partial = dst.with_name(f".{dst.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    writer = BinaryWriter(str(partial), chunk_bytes=chunk_bytes)
    for position, index in enumerate(np.random.default_rng(seed).permutation(len(records)).tolist()):
        record = records[index]
        hr = encode(record.hr)
        item = {"hr": hr, "crc": zlib.crc32(hr), "y": -1 if record.label is None else record.label}
        if record.lr is not None:
            lr = encode(record.lr)
            item.update(lr=lr, crc=zlib.crc32(lr, item["crc"]))
        writer[position] = {**item, "name": record.name}
    writer.done()
    writer.merge()
    index_path = partial / INDEX_NAME
    index = json.loads(index_path.read_text())
    index["lit_diffsr"] = {
        "format": SHARDS_FORMAT,
        "version": SHARDS_VERSION,
        "kind": kind,
        "classes": list(classes) if classes is not None else None,
        "scale": scale,
        "encoding": encoding,
        "num_items": len(records),
    }
    index_path.write_text(json.dumps(index))
    if dst.exists():
        shutil.rmtree(dst)
    partial.rename(dst)
    return len(index["chunks"])


# ---------------------------------------------------------------------------------------------- reading


def read_index(root: str, kinds: Sequence[str] | None) -> dict[str, Any]:
    """litdata's index of a local shard set, checked: our entry, its version, its kind, every chunk file
    present at its recorded size. Raises ConfigError naming the file."""
    folder = local_source(root)
    assert folder is not None
    index_path = folder / INDEX_NAME
    if not index_path.is_file():
        raise ConfigError(f"{index_path} is missing: {root} is not a shard set; {HOW_TO_WRITE}")
    try:
        index = json.loads(index_path.read_text())
        chunks = index["chunks"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{index_path} is not a litdata index ({error}); {HOW_TO_WRITE}") from error
    check_metadata(index, str(index_path), kinds)
    for chunk in chunks:
        path = folder / chunk["filename"]
        size = path.stat().st_size if path.is_file() else None
        if size != chunk["chunk_bytes"]:
            found = "missing" if size is None else f"{size} bytes, not {chunk['chunk_bytes']} (truncated?)"
            raise ConfigError(f"shard {path} is {found}; copy it again or rewrite the set ({HOW_TO_WRITE})")
    return index


def check_metadata(index: Mapping[str, Any], source: str, kinds: Sequence[str] | None) -> dict[str, Any]:
    """Our entry of a litdata index, checked against the format, its version and the kinds accepted."""
    meta = index.get("lit_diffsr")
    if not isinstance(meta, dict) or meta.get("format") != SHARDS_FORMAT:
        raise ConfigError(f"{source} has no lit_diffsr entry: not a lit_diffsr shard set; {HOW_TO_WRITE}")
    if meta.get("version") != SHARDS_VERSION:
        raise ConfigError(
            f"{source} is shard format version {meta.get('version')}, this lit_diffsr reads version "
            f"{SHARDS_VERSION}; rewrite the set with this version ({HOW_TO_WRITE})"
        )
    if kinds is not None and meta.get("kind") not in kinds:
        raise ConfigError(
            f"{source} holds a {meta.get('kind')!r} shard set, but this data config needs "
            f"{' or '.join(map(repr, kinds))} "
            "(classes: class folders, images: unlabelled, paired: HR/LR pairs); point data.root at the "
            "right set or change data.dataset / data.class_folders"
        )
    return meta


def _litdata_location(root: str) -> str:
    # litdata reads a plain path in place; `local:` makes it copy chunks into its cache, as from a bucket.
    return f"local:{root.removeprefix('file://')}" if root.startswith("file://") else root


class ShardDataset(Dataset):
    """The items of one shard set, served as the folder data sets serve theirs (same crops, degradations,
    per-item seeds, batch keys). `kinds` (None: any) are what the config accepts; `transform` (images and
    classes) or `crop_size` / `train` / `augment` (paired) as for `ImageFolderDataset` and
    `PairedFolderDataset`. `split` holds out part of the set; `skip_corrupt` reads every item once up
    front and drops the unreadable ones with a warning (`num_skipped`), else a bad item raises ConfigError.
    """

    def __init__(
        self,
        root: str,
        kinds: Sequence[str] | None = None,
        transform: CropTransform | None = None,
        small_image: str = "upscale",
        degradation: Degradation | Sequence[Mapping[str, Any]] | None = None,
        split: RandomSplit | None = None,
        skip_corrupt: bool = False,
        crop_size: int | None = None,
        train: bool = False,
        augment: bool = True,
        cache_dir: str | None = None,
        seed: int = 0,
    ):
        self.root, self.seed, self.image_key = str(root), seed, "hr"
        self.transform, self.small_image = transform, small_image
        self.degradation = as_degradation(degradation)
        self.crop_size, self.train = crop_size, train
        self.augmentation = PairAugmentation() if train and augment else None
        self._cache_dir, self._reader, self._reader_pid = cache_dir, None, -1
        local = local_source(self.root) is not None
        index = read_index(self.root, kinds) if local else None  # checked before litdata reads it
        reader = self._open()
        if index is None:  # an object store: litdata fetched the index into its cache
            index = json.loads((Path(reader.input_dir.path) / INDEX_NAME).read_text())
        self.meta = check_metadata(index, join(self.root, INDEX_NAME), kinds)
        self.kind, self.scale, self.classes = self.meta["kind"], self.meta["scale"], self.meta["classes"]
        self._chunk_files = [chunk["filename"] for chunk in index["chunks"]]
        self._chunk_ends = np.cumsum([chunk["chunk_size"] for chunk in index["chunks"]])
        indices = np.arange(len(reader))
        if split is not None:
            indices = indices[split.select(len(indices))]
        self.num_skipped = 0
        if skip_corrupt:
            readable = keep_readable(indices.tolist(), self._read, ConfigError, "shard item")
            self.num_skipped = len(indices) - len(readable)
            indices = np.asarray(readable, dtype=np.int64)
        if not len(indices):
            raise ConfigError(f"no readable items left in the shard set {self.root}")
        self.indices = indices

    def _open(self) -> Any:
        """litdata's reader, made once per process (DataLoader workers get theirs after the fork)."""
        if self._reader_pid != os.getpid():  # not a reader forked from another process
            from litdata import StreamingDataset

            try:
                # Items are read in random order inside a chunk: litdata's windowed decoding ("auto") would
                # decode a whole window for nearly every item, so items are decoded one by one.
                self._reader = StreamingDataset(
                    _litdata_location(self.root), cache_dir=self._cache_dir, batch_decode=0
                )
                self._reader_pid = os.getpid()
            except Exception as error:  # litdata's own errors for a missing or unreadable index
                raise ConfigError(
                    f"cannot open the shard set {self.root} ({type(error).__name__}: {error}); {HOW_TO_WRITE}"
                ) from error
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None, "_reader_pid": -1}  # each worker opens its own chunk files

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @property
    def chunk_groups(self) -> list[int]:
        """How many of this data set's items (in order) lie in each chunk: `SeededSampler(groups=...)`."""
        # O(chunks log items): start-up does not grow with the item count.
        counts = np.diff(np.searchsorted(self.indices, self._chunk_ends), prepend=0)
        return counts[counts > 0].tolist()

    def chunk_file(self, index: int) -> str:
        """The chunk file that stores item `index` of the shard set (for error messages)."""
        return join(self.root, self._chunk_files[int(np.searchsorted(self._chunk_ends, index, side="right"))])

    def _read(self, index: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray | None]:
        """Item `index` of the shard set, checked and decoded: (stored item, HR pixels, LR pixels or None)."""
        try:
            item = self._open()[index]
            hr, lr = item["hr"], item.get("lr")
            crc = zlib.crc32(hr) if lr is None else zlib.crc32(lr, zlib.crc32(hr))
            if crc != item["crc"]:
                raise ValueError("its CRC-32 does not match: the shard is corrupt")
            return item, self._pixels(hr, item["name"]), self._pixels(lr, f"{item['name']} (LR)")
        except ConfigError:
            raise
        except Exception as error:  # litdata's, a CRC mismatch or an undecodable image: all mean a bad shard
            raise ConfigError(
                f"cannot read item {index} of {self.chunk_file(index)}: {error}; rewrite the set "
                f"({HOW_TO_WRITE}) or set data.skip_corrupt=true to leave such items out"
            ) from error

    def _pixels(self, stored: Any, source: str) -> np.ndarray | None:
        if stored is None or self.meta["encoding"] == "raw":
            return stored
        return decode_rgb(stored, source)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, rng = item_rng(key, self.seed)
        item, hr, lr = self._read(int(self.indices[index]))
        name = str(item["name"])
        if lr is not None:
            return crop_pair(hr, lr, name, self.scale, self.crop_size, self.train, self.augmentation, rng)
        label = int(item["y"]) if self.kind == "classes" else None
        return serve_image(self, hr, name, label, rng, f"{self.root} ({name})")
