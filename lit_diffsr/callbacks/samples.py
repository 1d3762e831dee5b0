"""Sample grids at validation and test, image files at test and predict time."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torchvision.utils import make_grid, save_image

# A grid row holds at most this many images; tiles smaller than MIN_TILE pixels are enlarged (nearest
# neighbour, an integer factor) so that a 16 px sample is visible in an image viewer.
GRID_COLUMNS = 8
MIN_TILE = 64


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], the range image files and metrics use."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1).cpu()


def log_image(trainer: L.Trainer, key: str, grid: torch.Tensor, step: int) -> None:
    """Send an image to every logger that takes images (W&B); CSV has none."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[grid], step=step)


def enlarged(images: torch.Tensor, min_size: int = MIN_TILE) -> torch.Tensor:
    """`images` (N, C, H, W) scaled up by the integer factor that brings min(H, W) to at least `min_size`
    (nearest neighbour: every pixel stays a sharp block); unchanged when already that large."""
    factor = math.ceil(min_size / min(images.shape[-2:]))
    if factor <= 1:
        return images
    return torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")


def comparison_grid(rows: list[torch.Tensor], columns: int = GRID_COLUMNS, padding: int = 2) -> torch.Tensor:
    """One grid of images in [0, 1] from parallel `rows` (e.g. condition, sample, target of the same
    images): `columns` images per grid row, and each group of `columns` images shows its rows one under
    the other (condition 0-7 / sample 0-7 / target 0-7 / condition 8-15 / ...). Small images are enlarged."""
    count = len(rows[0])
    columns = min(columns, count)
    tiles = []
    for start in range(0, count, columns):
        for row in rows:
            chunk = row[start : start + columns]
            blanks = torch.ones_like(row[: columns - len(chunk)])  # keep the rows of a group aligned
            tiles += [chunk, blanks]
    return make_grid(enlarged(torch.cat(tiles)), nrow=columns, padding=padding, pad_value=1.0)


def model_step(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """The training step of the weights in use: the trainer's step while fitting, else the step of the
    checkpoint loaded for validate / test / predict (0 without one)."""
    if trainer.state.fn == "fit":
        return trainer.global_step
    return int(getattr(pl_module, "checkpoint_step", 0) or 0)


class SampleGrid(L.Callback):
    """Saves `<dirpath>/val_stepNNNNNNNN.png` (`test_step...` for `test`; the step of the weights, see
    `model_step`) from the samples the method returns for its first batches, and logs it. Rows: condition |
    samples | target when there is a condition (the outputs' "condition", else the batch's "lr"),
    originals | reconstructions for a
    method with `grid_shows_originals` (the autoencoder), else the samples alone; at most 8 images a row.
    With `write_test_images`, `test` also writes each returned sample as `<dirpath>/<name>.png`."""

    def __init__(self, dirpath: str, max_images: int = 64, write_test_images: bool = True):
        self.dirpath = Path(dirpath)
        self.max_images = max_images
        self.write_test_images = write_test_images
        self._rows: list[list[torch.Tensor]] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.dirpath = Path(trainer.strategy.broadcast(str(self.dirpath)))  # rank 0's choice for every rank

    def _collect(self, pl_module, outputs, batch) -> None:
        shown = sum(len(rows[0]) for rows in self._rows)
        if not outputs or "samples" not in outputs or shown >= self.max_images:
            return
        samples = outputs["samples"]
        # The method's own picture of its input (DDRM: H^+ y), else the batch's low-resolution image.
        condition = outputs.get("condition", batch.get("lr"))
        if condition is not None and condition.shape[1] == samples.shape[1]:
            condition = torch.nn.functional.interpolate(
                condition.float(), size=samples.shape[-2:], mode="nearest"
            )
            self._rows.append([to_unit(condition), to_unit(samples), to_unit(batch["hr"])])
        elif getattr(pl_module, "grid_shows_originals", False):
            self._rows.append([to_unit(batch["hr"]), to_unit(samples)])
        else:
            self._rows.append([to_unit(samples)])

    def _save(self, trainer, pl_module, prefix: str) -> None:
        if not self._rows or not trainer.is_global_zero or trainer.sanity_checking:
            return
        rows = [torch.cat(parts)[: self.max_images] for parts in zip(*self._rows, strict=True)]
        grid = comparison_grid(rows)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        step = model_step(trainer, pl_module)
        save_image(grid, self.dirpath / f"{prefix}_step{step:08d}.png")
        log_image(trainer, f"{prefix}/samples", grid, step)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._collect(pl_module, outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(pl_module, outputs, batch)
        if self.write_test_images and outputs and "samples" in outputs:
            count = len(outputs["samples"])
            names = batch.get("name") or [f"batch{batch_idx:05d}_{i:03d}" for i in range(count)]
            write_images(to_unit(outputs["samples"]), names, self.dirpath)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer, pl_module, "test")


def write_images(images: torch.Tensor, names, folder: Path) -> None:
    """Each image in [0, 1] as `<folder>/<name>.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names, strict=True):
        save_image(image, folder / f"{name}.png")


class SampleWriter(BasePredictionWriter):
    """Writes each predicted image as `<dirpath>/<name>.png` and all of them as `<dirpath>/grid.png`
    (8 a row, small images enlarged). The directory is rank 0's `dirpath` on every process; `train.run`
    gives each predict a fresh one (`samples/predict`, then `predict-2`, ...)."""

    def __init__(self, dirpath: str, nrow: int = GRID_COLUMNS):
        super().__init__(write_interval="batch")
        self.dirpath = Path(dirpath)
        self.nrow = nrow
        self._images: list[torch.Tensor] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.dirpath = Path(trainer.strategy.broadcast(str(self.dirpath)))

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._images = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        images = to_unit(prediction["samples"])
        write_images(images, prediction["names"], self.dirpath)
        self._images.append(images)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if not self._images or not trainer.is_global_zero:
            return
        path = self.dirpath / "grid.png"
        save_image(comparison_grid([torch.cat(self._images)], columns=self.nrow), path)
        rank_zero_info(f"Sample grid: {path.resolve()}")
