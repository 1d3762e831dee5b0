"""Map-style datasets that yield batch dicts: `hr` (float CHW in [-1, 1]), `y` (class, long),
`name`, and with a degradation `lr` (the observation) and `mask` (1 x H x W, 1 = observed).

Every item is a pure function of its key: an int index (seeded from the dataset seed and the
index: fixed crops for validation) or an `(index, item_seed)` pair from `SeededSampler` (fresh
random crops every epoch, reproducible from the sampler's seed and epoch).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from lit_diffsr.data.degradations import Degradation, from_uint8
from lit_diffsr.data.io import (
    IMAGE_EXTENSIONS,
    DatasetLayoutError,
    ImageReadError,
    find_images,
    is_image_file,
    load_rgb,
    read_image_size,
)
from lit_diffsr.data.transforms import CropTransform, PairAugmentation, SmallImageError, fit_small_image
from lit_diffsr.errors import ConfigError

ItemKey = int | tuple[int, int]

FOLDER_LAYOUT = (
    "expected either one sub-folder per class (root/<class>/**/image.png, as torchvision's ImageFolder) "
    f"or a flat folder of images (root/**/image.png); image extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}"
)
PAIRED_LAYOUT = (
    "expected an HR folder and an LR folder with the same file names (hr/0001.png <-> lr/0001.png) "
    "or DIV2K names (hr/0001.png <-> lr/0001x4.png), LR images exactly `scale` times smaller"
)


@dataclass(frozen=True)
class RandomSplit:
    """Deterministic train/val hold-out of one folder: the sorted files are permuted with `seed`
    and the first `num_val` (default round(val_fraction * N), at least 1) form the val subset."""

    subset: Literal["train", "val"]
    val_fraction: float = 0.05
    num_val: int | None = None
    seed: int = 0

    def select(self, count: int) -> np.ndarray:
        """Sorted indices of this subset among `count` items."""
        if self.subset not in ("train", "val"):
            raise ConfigError(f"RandomSplit subset must be 'train' or 'val', got {self.subset!r}")
        num_val = self.num_val if self.num_val is not None else max(1, round(self.val_fraction * count))
        if not 0 < num_val < count:
            raise ConfigError(
                f"cannot hold out {num_val} of {count} images for validation (need 0 < num_val < {count}); "
                "adjust val_fraction / num_val or provide a separate validation folder"
            )
        order = np.random.default_rng(self.seed).permutation(count)
        chosen = order[:num_val] if self.subset == "val" else order[num_val:]
        return np.sort(chosen)


def as_degradation(degradation: Degradation | Sequence[Mapping[str, Any]] | None) -> Degradation | None:
    """Accept a Degradation, its list-of-dicts config (e.g. from Hydra), or None (or [])."""
    if degradation is None or isinstance(degradation, Degradation):
        return degradation
    return Degradation(degradation) if len(degradation) else None


def item_rng(key: ItemKey, dataset_seed: int) -> tuple[int, np.random.Generator]:
    """Split a key into (index, generator): a sampler's item seed, or (dataset seed, index)."""
    if isinstance(key, tuple):
        index, item_seed = key
        return int(index), np.random.default_rng(item_seed)
    return int(key), np.random.default_rng([dataset_seed, int(key)])


def to_chw_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 in [0, 255] or float in [-1, 1] -> float32 (C, H, W) tensor in [-1, 1]."""
    if image.dtype == np.uint8:
        image = from_uint8(image)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))


def make_item(
    hr: np.ndarray,
    name: str,
    label: int | None = None,
    degradation: Degradation | None = None,
    rng: np.random.Generator | None = None,
    image_key: str = "hr",
) -> dict[str, Any]:
    """Batch dict for one uint8 (H, W, 3) image; the observation is degraded from this very crop,
    so `lr` and `hr` stay aligned."""
    item: dict[str, Any] = {image_key: to_chw_tensor(hr), "name": name}
    if label is not None:
        item["y"] = torch.tensor(label, dtype=torch.long)
    if degradation is not None:
        degraded = degradation(from_uint8(hr), rng if rng is not None else np.random.default_rng())
        item["lr"] = to_chw_tensor(degraded.image)
        if degraded.mask is not None:
            item["mask"] = torch.from_numpy(degraded.mask)[None]
    return item


def serve_image(
    dataset: Any, image: np.ndarray, name: str, label: int | None, rng: np.random.Generator, source: Any
) -> dict[str, Any]:
    """The batch dict of one decoded image under a dataset's `transform`, `small_image`, `degradation` and
    `image_key`, as `ImageFolderDataset` serves its files (shards serve their images with it)."""
    if dataset.transform is not None:
        image = fit_small_image(image, dataset.transform.crop_size, dataset.small_image, source)
        image = dataset.transform(image, rng)
    return make_item(image, name, label, dataset.degradation, rng, dataset.image_key)


def crop_pair(
    hr: np.ndarray,
    lr: np.ndarray,
    name: str,
    scale: int,
    crop_size: int | None,
    train: bool,
    augmentation: PairAugmentation | None,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The batch dict of one (HR, LR) pair: a crop chosen on the LR grid (crop_size / scale pixels, uniform
    in training, centred otherwise) and the same region of the HR, then the same flip / rotation for both."""
    if crop_size is not None:
        lr_crop = crop_size // scale
        if train:  # uniform over the LR grid
            top = int(rng.integers(lr.shape[0] - lr_crop + 1))
            left = int(rng.integers(lr.shape[1] - lr_crop + 1))
        else:
            top, left = (lr.shape[0] - lr_crop) // 2, (lr.shape[1] - lr_crop) // 2
        lr = lr[top : top + lr_crop, left : left + lr_crop]
        hr = hr[top * scale : (top + lr_crop) * scale, left * scale : (left + lr_crop) * scale]
    if augmentation is not None:
        hr, lr = augmentation(hr, lr, rng)
    return {"hr": to_chw_tensor(hr), "lr": to_chw_tensor(lr), "name": name}


def keep_readable(
    keys: Iterable[int], read: Callable[[int], object], error: type[Exception], what: str
) -> list[int]:
    """The keys whose `read` succeeds (data.skip_corrupt=true); every other one is named in a warning."""
    readable = []
    for key in keys:
        try:
            read(key)
        except error as failure:
            warnings.warn(f"skipping corrupt {what}: {failure}", stacklevel=3)
            continue
        readable.append(key)
    return readable


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _contains_images(folder: Path) -> bool:
    return any(path.is_file() and is_image_file(path) for path in folder.rglob("*"))


def _check_folder(root: Path) -> None:
    if not root.is_dir():
        raise DatasetLayoutError(f"image folder {str(root)!r} does not exist; {FOLDER_LAYOUT}")


class ImageFolderDataset(Dataset):
    """Images from a folder, labelled by class sub-folder or unlabelled.

    class_folders: True (class = first-level sub-folder, images found recursively below it),
    False (all images recursively, no labels) or "auto" (class folders when the root holds
    sub-folders and no images of its own). `classes` fixes the label order (e.g. the training
    classes for a validation folder). With skip_corrupt=True every file is decoded once up front
    and unreadable ones are dropped with a warning (`num_skipped`); otherwise a corrupt file raises
    ImageReadError when loaded. `transform` = None serves whole images.
    """

    def __init__(
        self,
        root: str | Path,
        transform: CropTransform | None = None,
        class_folders: bool | str = "auto",
        skip_corrupt: bool = False,
        small_image: str = "upscale",
        degradation: Degradation | Sequence[Mapping[str, Any]] | None = None,
        split: RandomSplit | None = None,
        classes: Sequence[str] | None = None,
        image_key: str = "hr",
        seed: int = 0,
    ):
        self.root = Path(root)
        _check_folder(self.root)
        self.transform, self.small_image, self.image_key, self.seed = transform, small_image, image_key, seed
        self.degradation = as_degradation(degradation)
        files, labels, self.classes = self._list(self._resolve_class_folders(class_folders), classes)
        if split is not None:
            keep = split.select(len(files))
            files = [files[i] for i in keep]
            labels = [labels[i] for i in keep] if labels is not None else None
        self.num_skipped = 0
        if skip_corrupt:
            readable = keep_readable(range(len(files)), lambda i: load_rgb(files[i]), ImageReadError, "image")
            self.num_skipped = len(files) - len(readable)
            files = [files[i] for i in readable]
            labels = [labels[i] for i in readable] if labels is not None else None
        if not files:
            raise DatasetLayoutError(f"no readable images left in {str(self.root)!r}; {FOLDER_LAYOUT}")
        self.files, self.labels = files, labels

    @property
    def num_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    def _resolve_class_folders(self, class_folders: bool | str) -> bool:
        if class_folders not in (True, False, "auto"):
            raise ConfigError(f"class_folders must be true, false or 'auto', got {class_folders!r}")
        if class_folders != "auto":
            return bool(class_folders)
        if not find_images(self.root, recursive=False):
            return bool(_subfolders(self.root))
        if any(_contains_images(folder) for folder in _subfolders(self.root)):
            raise DatasetLayoutError(
                f"{str(self.root)!r} holds images both at its top level and in sub-folders, so class folders "
                f"cannot be detected; set class_folders to true or false. {FOLDER_LAYOUT}"
            )
        return False

    def _list(
        self, by_class: bool, classes: Sequence[str] | None
    ) -> tuple[list[Path], list[int] | None, list[str] | None]:
        if not by_class:
            files = find_images(self.root)
            if not files:
                raise DatasetLayoutError(
                    f"image folder {str(self.root)!r} contains no images; {FOLDER_LAYOUT}"
                )
            return files, None, None
        folders = _subfolders(self.root)
        if not folders:
            raise DatasetLayoutError(
                f"image folder {str(self.root)!r} has no class sub-folders; {FOLDER_LAYOUT}"
            )
        classes = list(classes) if classes is not None else [folder.name for folder in folders]
        label_of = {name: label for label, name in enumerate(classes)}
        files, labels = [], []
        for folder in folders:
            if folder.name not in label_of:
                raise DatasetLayoutError(
                    f"class folder {str(folder)!r} is not one of the {len(classes)} training classes"
                )
            images = find_images(folder)
            if not images:
                raise DatasetLayoutError(f"class folder {str(folder)!r} contains no images; {FOLDER_LAYOUT}")
            files += images
            labels += [label_of[folder.name]] * len(images)
        if find_images(self.root, recursive=False):
            warnings.warn(
                f"images at the top level of {str(self.root)!r} are ignored (class folders)", stacklevel=3
            )
        return files, labels, classes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, rng = item_rng(key, self.seed)
        path = self.files[index]
        try:
            image = load_rgb(path)
        except ImageReadError as error:
            raise ImageReadError(
                f"{error}; remove or replace the file, or leave unreadable images out: data.skip_corrupt=true"
            ) from None
        if self.transform is not None:
            image = fit_small_image(image, self.transform.crop_size, self.small_image, path)
            image = self.transform(image, rng)
        label = self.labels[index] if self.labels is not None else None
        return make_item(image, path.stem, label, self.degradation, rng, self.image_key)


class PairedFolderDataset(Dataset):
    """Aligned (HR, LR) image pairs from two folders, for super-resolution with real LR files.

    Pairs match by relative path without extension, or DIV2K style (`0001.png` <-> `0001x4.png`).
    A crop is chosen on the LR grid (crop_size / scale pixels) and the HR crop is the same region
    scaled by `scale`, so the pair stays aligned; in training both get the same flip / rotation.
    `crop_size` = None serves whole images.
    """

    def __init__(
        self,
        hr_root: str | Path,
        lr_root: str | Path,
        scale: int,
        crop_size: int | None,
        train: bool,
        augment: bool = True,
        split: RandomSplit | None = None,
        seed: int = 0,
    ):
        self.hr_root, self.lr_root, self.scale, self.seed = Path(hr_root), Path(lr_root), int(scale), seed
        for root in (self.hr_root, self.lr_root):
            if not root.is_dir():
                raise DatasetLayoutError(f"image folder {str(root)!r} does not exist; {PAIRED_LAYOUT}")
        if crop_size is not None and crop_size % self.scale:
            raise ConfigError(f"crop_size {crop_size} must be divisible by the scale {self.scale}")
        self.crop_size, self.train = crop_size, train
        self.augmentation = PairAugmentation() if train and augment else None
        pairs = self._match_pairs()
        if split is not None:
            pairs = [pairs[i] for i in split.select(len(pairs))]
        for hr_path, lr_path in pairs:
            self._check_sizes(hr_path, lr_path)
        self.pairs = pairs

    @staticmethod
    def infer_scale(hr_root: str | Path, lr_root: str | Path) -> int:
        """The integer size ratio of the first HR and first LR image (sorted order)."""
        hr_files, lr_files = find_images(hr_root), find_images(lr_root)
        if not hr_files or not lr_files:
            empty = hr_root if not hr_files else lr_root
            raise DatasetLayoutError(f"image folder {str(empty)!r} contains no images; {PAIRED_LAYOUT}")
        (hr_height, _), (lr_height, _) = read_image_size(hr_files[0]), read_image_size(lr_files[0])
        if hr_height % lr_height:
            raise ConfigError(
                f"cannot infer the SR scale: {str(hr_files[0])!r} (height {hr_height}) is not an integer "
                f"multiple of {str(lr_files[0])!r} (height {lr_height}); give the scale explicitly"
            )
        return hr_height // lr_height

    def _match_pairs(self) -> list[tuple[Path, Path]]:
        hr_files = find_images(self.hr_root)
        if not hr_files:
            raise DatasetLayoutError(
                f"image folder {str(self.hr_root)!r} contains no images; {PAIRED_LAYOUT}"
            )
        lr_by_stem = {
            path.relative_to(self.lr_root).with_suffix("").as_posix(): path
            for path in find_images(self.lr_root)
        }
        pairs = []
        for hr_path in hr_files:
            stem = hr_path.relative_to(self.hr_root).with_suffix("").as_posix()
            candidates = (stem, f"{stem}x{self.scale}")
            lr_path = next((lr_by_stem[name] for name in candidates if name in lr_by_stem), None)
            if lr_path is None:
                raise DatasetLayoutError(
                    f"no LR partner for {str(hr_path)!r} in {str(self.lr_root)!r} "
                    f"(looked for {' or '.join(name + '.*' for name in candidates)}); {PAIRED_LAYOUT}"
                )
            pairs.append((hr_path, lr_path))
        return pairs

    def _check_sizes(self, hr_path: Path, lr_path: Path) -> None:
        (hr_height, hr_width), (lr_height, lr_width) = read_image_size(hr_path), read_image_size(lr_path)
        if (hr_height, hr_width) != (lr_height * self.scale, lr_width * self.scale):
            raise ConfigError(
                f"HR {str(hr_path)!r} is {hr_height}x{hr_width} but LR {str(lr_path)!r} is "
                f"{lr_height}x{lr_width}: sizes must differ by exactly the scale {self.scale}"
            )
        if self.crop_size is not None and min(lr_height, lr_width) < self.crop_size // self.scale:
            raise SmallImageError(
                f"LR image {str(lr_path)!r} ({lr_height}x{lr_width}) is smaller than the LR crop "
                f"{self.crop_size // self.scale} (crop_size {self.crop_size} / scale {self.scale})"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, rng = item_rng(key, self.seed)
        hr_path, lr_path = self.pairs[index]
        hr, lr = load_rgb(hr_path), load_rgb(lr_path)
        return crop_pair(hr, lr, hr_path.stem, self.scale, self.crop_size, self.train, self.augmentation, rng)


def _sklearn_sample(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _skimage_photo(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        photo = getattr(skimage.data, name)()
        return photo[0] if isinstance(photo, tuple) else photo  # stereo_motorcycle: (left, right, disparity)

    return load


# Colour photographs shipped inside the scikit-image and scikit-learn wheels (no download).
DEMO_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage_photo("astronaut"),
    "chelsea": _skimage_photo("chelsea"),
    "coffee": _skimage_photo("coffee"),
    "rocket": _skimage_photo("rocket"),
    "motorcycle": _skimage_photo("stereo_motorcycle"),
    "hubble_deep_field": _skimage_photo("hubble_deep_field"),
    "immunohistochemistry": _skimage_photo("immunohistochemistry"),
    "retina": _skimage_photo("retina"),
    "china": _sklearn_sample("china.jpg"),
    "flower": _sklearn_sample("flower.jpg"),
}


@functools.lru_cache(maxsize=4)
def load_demo_photos(short_side: int) -> tuple[np.ndarray, ...]:
    """The demo photographs as uint8 RGB, resized (anti-aliased bicubic) to the given short side."""
    resized = []
    for load in DEMO_PHOTOS.values():
        photo = Image.fromarray(load())
        factor = short_side / min(photo.size)
        size = (max(short_side, round(photo.width * factor)), max(short_side, round(photo.height * factor)))
        resized.append(np.asarray(photo.resize(size, Image.Resampling.BICUBIC)))
    return tuple(resized)


class DemoPhotos(Dataset):
    """Class-labelled crops of the bundled photographs (class = photograph), for runs without data.

    Each photo is resized so its short side is `resolution * context`. "train" serves
    `samples_per_epoch` random crops (cycling through the photos, so classes are balanced);
    "val" and "test" serve `crops_per_side`² fixed crops per photo on two interleaved grids (so
    val and test crops differ), identical every epoch.
    """

    classes: list[str] = list(DEMO_PHOTOS)

    def __init__(
        self,
        split: str,
        resolution: int,
        context: float = 2.0,
        samples_per_epoch: int = 512,
        crops_per_side: int = 3,
        random_flip: bool = True,
        degradation: Degradation | Sequence[Mapping[str, Any]] | None = None,
        seed: int = 0,
    ):
        if split not in ("train", "val", "test"):
            raise ConfigError(f"DemoPhotos split must be 'train', 'val' or 'test', got {split!r}")
        if context < 1.0:
            raise ConfigError(
                f"demo context must be >= 1 (the photo's short side is resolution * context), got {context}"
            )
        self.split, self.resolution, self.seed = split, resolution, seed
        self.samples_per_epoch, self.crops_per_side, self.random_flip = (
            samples_per_epoch,
            crops_per_side,
            random_flip,
        )
        self.degradation = as_degradation(degradation)
        self.photos = load_demo_photos(round(resolution * context))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        if self.split == "train":
            return self.samples_per_epoch
        return len(self.photos) * self.crops_per_side**2

    def _grid_offset(self, cell: int, free: int) -> int:
        # val and test grids interleave: fractions (k + 1/4) / n and (k + 3/4) / n of the free range
        shift = 0.25 if self.split == "val" else 0.75
        return round((cell + shift) / self.crops_per_side * free)

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        index, rng = item_rng(key, self.seed)
        if self.split == "train":
            label = index % len(self.photos)
            photo = self.photos[label]
            top = int(rng.integers(photo.shape[0] - self.resolution + 1))
            left = int(rng.integers(photo.shape[1] - self.resolution + 1))
            crop_number = index
        else:
            label, crop_number = divmod(index, self.crops_per_side**2)
            photo = self.photos[label]
            row, column = divmod(crop_number, self.crops_per_side)
            top = self._grid_offset(row, photo.shape[0] - self.resolution)
            left = self._grid_offset(column, photo.shape[1] - self.resolution)
        crop = photo[top : top + self.resolution, left : left + self.resolution]
        if self.split == "train" and self.random_flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return make_item(crop, f"{self.classes[label]}_{crop_number:04d}", label, self.degradation, rng)
