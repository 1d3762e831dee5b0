"""The Lightning DataModule behind every experiment's `data` config group."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from lit_diffsr.data.datasets import (
    FOLDER_LAYOUT,
    PAIRED_LAYOUT,
    DatasetLayoutError,
    DemoPhotos,
    ImageFolderDataset,
    PairedFolderDataset,
    RandomSplit,
    as_degradation,
)
from lit_diffsr.data.degradations import Degradation
from lit_diffsr.data.samplers import SeededSampler
from lit_diffsr.data.shards import HOW_TO_WRITE, ShardDataset, join, local_source, shard_set_exists
from lit_diffsr.data.transforms import SMALL_IMAGE_POLICIES, CropTransform
from lit_diffsr.errors import ConfigError

log = logging.getLogger("lit_diffsr")

log = logging.getLogger("lit_diffsr")

DATASETS = ("folder", "paired", "demo")
FORMATS = ("folders", "shards")
# The shard kinds each data config reads (see lit_diffsr.data.shards), by dataset and class_folders.
SHARD_KINDS = {"paired": ("paired",), True: ("classes",), False: ("images",), "auto": ("classes", "images")}
SUBSETS = ("train", "val", "test", "predict")


class ImageDataModule(L.LightningDataModule):
    """Images (optionally class-labelled, optionally degraded on the fly) or HR/LR pairs.

    dataset: "folder" (an image folder; root/train_dir + root/val_dir when root/train_dir exists,
    otherwise a seeded hold-out of root by val_fraction / num_val), "paired" (hr_root + lr_root,
    same layout rule) or "demo" (the photographs bundled with scikit-image / scikit-learn).
    `resolution` is the (HR) crop size. `degradation` (list of step dicts, see
    `lit_diffsr.data.degradations.Degradation`) adds `lr` / `mask` to every item. `resize=False`
    crops folder images at native resolution instead of first resizing their short side.
    `scale` is the paired data's SR factor (inferred from the first pair when None).
    `format`: "folders" reads image files; "shards" reads the shard sets that
    `python -m lit_diffsr.data.prepare shards` writes (`root` = a local folder, `file://` or object-store URL
    holding `train_dir` / `val_dir` / `test_dir` sets, or one set held out by seed; pairs too), with the same
    items, crops, seeds and resume, and `shard_cache_dir` for the chunks litdata streams from URLs.
    Predict serves the images of `predict_dir` whole (as `lr` when the data has an observation,
    else as `hr`; one per batch since sizes differ), or the val set when predict_dir is None.
    """

    def __init__(
        self,
        dataset: str = "folder",
        root: str | None = None,
        hr_root: str | None = None,
        lr_root: str | None = None,
        resolution: int = 64,
        batch_size: int = 16,
        num_workers: int = 0,
        class_folders: bool | str = "auto",
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        val_fraction: float = 0.05,
        num_val: int | None = None,
        random_flip: bool = True,
        small_image: str = "upscale",
        skip_corrupt: bool = False,
        degradation: Degradation | Sequence[Mapping[str, Any]] | None = None,
        demo_context: float = 2.0,
        demo_samples_per_epoch: int = 512,
        predict_dir: str | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        resize: bool = True,
        scale: int | None = None,
        demo_crops_per_side: int = 3,
        format: str = "folders",
        shard_cache_dir: str | None = None,
    ):
        super().__init__()
        if isinstance(degradation, (DictConfig, ListConfig)):
            degradation = OmegaConf.to_container(degradation, resolve=True)  # checkpoints load weights_only
        self.save_hyperparameters()
        if dataset not in DATASETS:
            raise ConfigError(f"data.dataset={dataset!r} is not one of {', '.join(DATASETS)}")
        if small_image not in SMALL_IMAGE_POLICIES:
            raise ConfigError(
                f"data.small_image={small_image!r} is not one of {', '.join(SMALL_IMAGE_POLICIES)}"
            )
        self.degradation = as_degradation(degradation)
        if self.degradation is not None and resolution % self.degradation.scale:
            raise ConfigError(
                f"data.resolution={resolution} is not divisible by the degradation's downsample factor "
                f"{self.degradation.scale}; choose a resolution that is a multiple of it"
            )
        if dataset == "paired" and self.degradation is not None:
            raise ConfigError(
                "data.degradation cannot be combined with data.dataset='paired' (LR comes from files)"
            )
        if format not in FORMATS:
            raise ConfigError(f"data.format={format!r} is not one of {', '.join(FORMATS)}")
        if format == "shards" and dataset == "demo":
            raise ConfigError(
                "data.format=shards reads data.dataset=folder or paired; the demo photos are built in "
                f"(to train on them from shards, save them as a folder and {HOW_TO_WRITE})"
            )
        self._datasets: dict[str, Dataset] = {}
        self._scale = scale
        self._train_sampler: SeededSampler | None = None
        self._train_sampler_state: dict[str, Any] | None = None  # from a checkpoint, until the loader exists

    # ------------------------------------------------------------------ properties

    @property
    def num_classes(self) -> int | None:
        """Number of classes (None for unlabelled data): the training set's class folders or photos."""
        if self.hparams.dataset == "paired":
            return None
        if self.hparams.dataset == "demo":
            return len(DemoPhotos.classes)
        return self.dataset("train").num_classes

    @property
    def lr_scale(self) -> int | None:
        """How many times smaller `lr` is than `hr` (1 for same-size degradations), None without `lr`."""
        if self.hparams.dataset == "paired":
            return self.dataset("train").scale if self.hparams.format == "shards" else self._paired_scale()
        return self.degradation.scale if self.degradation is not None else None

    # ------------------------------------------------------------------ datasets

    def setup(self, stage: str | None = None) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}
        for subset in needed.get(stage, SUBSETS):
            self.dataset(subset)

    def dataset(self, subset: str) -> Dataset:
        """The dataset of one subset (train, val, test, predict), built once."""
        if subset not in SUBSETS:
            raise ConfigError(f"subset must be one of {SUBSETS}, got {subset!r}")
        if subset not in self._datasets:
            self._datasets[subset] = self._build(subset)
        return self._datasets[subset]

    def _build(self, subset: str) -> Dataset:
        if subset == "predict":
            if self.hparams.predict_dir is None:
                return self.dataset("val")
            image_key = "hr" if self.lr_scale is None else "lr"
            return ImageFolderDataset(
                self._existing(self.hparams.predict_dir, "data.predict_dir"),
                None,
                class_folders=False,
                image_key=image_key,
            )
        if self.hparams.dataset == "demo":  # the demo has its own test crops
            return self._demo(subset)
        if subset == "test" and self.hparams.test_dir is None:
            return self.dataset("val")
        if self.hparams.format == "shards":
            return self._shards(subset)
        if self.hparams.dataset == "paired":
            return self._paired(subset)
        return self._folder(subset)

    def _demo(self, subset: str) -> DemoPhotos:
        h = self.hparams
        return DemoPhotos(
            subset,
            h.resolution,
            context=h.demo_context,
            samples_per_epoch=h.demo_samples_per_epoch,
            crops_per_side=h.demo_crops_per_side,
            random_flip=h.random_flip,
            degradation=self.degradation,
            seed=h.seed,
        )

    def _folder(self, subset: str) -> ImageFolderDataset:
        h = self.hparams
        if h.root is None:
            raise ConfigError(f"data.root is required for data.dataset='folder'; {FOLDER_LAYOUT}")
        folder, split = self._subset_folder(self._existing(h.root, "data.root"), subset)
        classes = self.dataset("train").classes if subset != "train" else None
        try:
            return ImageFolderDataset(
                folder,
                self._crop_transform(subset),
                class_folders=h.class_folders,
                skip_corrupt=h.skip_corrupt,
                small_image=h.small_image,
                degradation=self.degradation,
                split=split,
                classes=classes,
                seed=h.seed,
            )
        except DatasetLayoutError as error:
            raise DatasetLayoutError(f"check data.root={h.root!r} ({subset} set): {error}") from error

    def _crop_transform(self, subset: str) -> CropTransform:
        h = self.hparams
        return CropTransform(
            h.resolution, train=subset == "train", resize=h.resize, random_flip=h.random_flip
        )

    def _shards(self, subset: str) -> ShardDataset:
        h = self.hparams
        if h.root is None:
            raise ConfigError(f"data.root is required for data.format=shards; {HOW_TO_WRITE}")
        location, split = self._subset_shards(str(h.root), subset)
        paired = h.dataset == "paired"
        dataset = ShardDataset(
            location,
            SHARD_KINDS["paired" if paired else h.class_folders],
            transform=None if paired else self._crop_transform(subset),
            small_image=h.small_image,
            degradation=self.degradation,
            split=split,
            skip_corrupt=h.skip_corrupt,
            crop_size=h.resolution,
            train=subset == "train",
            augment=h.random_flip,
            cache_dir=h.shard_cache_dir,
            seed=h.seed,
        )
        if subset != "train" and dataset.classes != self.dataset("train").classes:
            raise ConfigError(f"the {subset} shards {location} have other classes than the training shards")
        return dataset

    def _subset_shards(self, root: str, subset: str) -> tuple[str, RandomSplit | None]:
        """The shard set of one subset, by the folder rule: root/train_dir etc. when root/train_dir is a set
        (always, for an object store), else root itself with a seeded hold-out."""
        h = self.hparams
        if subset == "test":
            return join(root, h.test_dir), None
        if local_source(root) is None or shard_set_exists(join(root, h.train_dir)):
            return join(root, h.train_dir if subset == "train" else h.val_dir), None
        if not shard_set_exists(root):
            raise ConfigError(
                f"data.root={root!r} holds no shard set (no index.json in it or in its {h.train_dir!r} "
                f"sub-folder); {HOW_TO_WRITE}"
            )
        return root, RandomSplit(subset, h.val_fraction, h.num_val, h.seed)

    def _paired(self, subset: str) -> PairedFolderDataset:
        h = self.hparams
        if h.hr_root is None or h.lr_root is None:
            raise ConfigError(
                f"data.hr_root and data.lr_root are required for data.dataset='paired'; {PAIRED_LAYOUT}"
            )
        hr_folder, split = self._subset_folder(self._existing(h.hr_root, "data.hr_root"), subset)
        lr_folder, _ = self._subset_folder(self._existing(h.lr_root, "data.lr_root"), subset)
        try:
            return PairedFolderDataset(
                hr_folder,
                lr_folder,
                self._paired_scale(),
                h.resolution,
                train=subset == "train",
                augment=h.random_flip,
                split=split,
                seed=h.seed,
            )
        except DatasetLayoutError as error:
            raise DatasetLayoutError(f"check data.hr_root / data.lr_root ({subset} set): {error}") from error

    def _paired_scale(self) -> int:
        if self._scale is None:
            hr_folder, _ = self._subset_folder(self._existing(self.hparams.hr_root, "data.hr_root"), "train")
            lr_folder, _ = self._subset_folder(self._existing(self.hparams.lr_root, "data.lr_root"), "train")
            self._scale = PairedFolderDataset.infer_scale(hr_folder, lr_folder)
        return self._scale

    def _existing(self, path: str | None, key: str) -> Path:
        if path is None or not Path(path).is_dir():
            layout = PAIRED_LAYOUT if self.hparams.dataset == "paired" else FOLDER_LAYOUT
            raise DatasetLayoutError(f"{key}={path!r} is not an existing folder; {layout}")
        return Path(path)

    def _subset_folder(self, root: Path, subset: str) -> tuple[Path, RandomSplit | None]:
        """root/train_dir, root/val_dir, root/test_dir when root/train_dir exists, else a seeded hold-out."""
        h = self.hparams
        if subset == "test":
            return self._existing(str(root / h.test_dir), "data.test_dir"), None
        if (root / h.train_dir).is_dir():
            folder = root / (h.train_dir if subset == "train" else h.val_dir)
            return self._existing(str(folder), f"data.{subset}_dir"), None
        return root, RandomSplit(subset, h.val_fraction, h.num_val, h.seed)

    # ------------------------------------------------------------------ loaders

    def _loader(self, dataset: Dataset, batch_size: int, sampler: SeededSampler | None = None) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            # Worker base seeds come from here, not from the global RNG: a resumed run's noise stream
            # (restored from the checkpoint) is then not shifted by the new iterator it creates.
            generator=torch.Generator().manual_seed(self.hparams.seed),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        groups = dataset.chunk_groups if isinstance(dataset, ShardDataset) else None  # read chunk by chunk
        sampler = SeededSampler(
            len(dataset), self.hparams.seed, num_replicas=replicas, rank=rank, groups=groups
        )
        if self._train_sampler_state is not None:
            sampler.load_state_dict(self._train_sampler_state)
            self._train_sampler_state = None
            if sampler.seed != self.hparams.seed:  # a resume with another data.seed: the config's applies
                log.warning(
                    "Resuming with a changed setting (the config's value applies): data.seed: %d -> %d; the "
                    "rest of this epoch follows the new order, so some of its items may repeat or be skipped",
                    sampler.seed, self.hparams.seed,
                )
                sampler.seed = self.hparams.seed
            if sampler.consumed:  # said once, in place of Lightning's warning of an unresumable loader
                log.info("Data resume mid-epoch, exactly: epoch %d continues after its first %d items",
                         sampler.epoch, sampler.consumed)
        self._train_sampler = sampler
        return self._loader(dataset, self.hparams.batch_size, sampler)

    # ------------------------------------------------------------------ exact mid-epoch resume

    def state_dict(self) -> dict[str, Any]:
        """The training sampler's (seed, epoch, consumed): `consumed` counts the items of the current epoch
        that all ranks have trained on (Lightning's processed batches of the epoch x batch size x ranks), so
        a run resumed from this checkpoint neither repeats nor skips a batch."""
        if self._train_sampler is None or self.trainer is None:
            return {}
        batches_done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        consumed = self._train_sampler.consumed_at(batches_done, self.hparams.batch_size)
        return {"train_sampler": {**self._train_sampler.state_dict(), "consumed": consumed}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_sampler_state = state_dict.get("train_sampler")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), self.hparams.batch_size)

    def predict_dataloader(self) -> DataLoader:
        whole_images = self.hparams.predict_dir is not None
        return self._loader(self.dataset("predict"), 1 if whole_images else self.hparams.batch_size)
