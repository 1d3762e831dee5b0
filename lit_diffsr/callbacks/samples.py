"""Sample grids at validation and image files at predict time."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torchvision.utils import make_grid, save_image


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], the range image files and metrics use."""
    return ((images.detach().float() + 1) / 2).clamp(0, 1).cpu()


def log_image(trainer: L.Trainer, key: str, grid: torch.Tensor, step: int) -> None:
    """Send an image to every logger that takes images (W&B); CSV has none."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[grid], step=step)


class SampleGrid(L.Callback):
    """Saves `samples/val_stepNNNNNNNN.png` from the samples the method returns for its first validation
    batches (rows: condition | samples | target when the batch has a condition), and logs it."""

    def __init__(self, dirpath: str, max_images: int = 64):
        self.dirpath = Path(dirpath)
        self.max_images = max_images
        self._rows: list[torch.Tensor] = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        if not outputs or "samples" not in outputs or sum(len(r) for r in self._rows) >= self.max_images:
            return
        samples = outputs["samples"]
        if "lr" in batch and batch["lr"].shape[1] == samples.shape[1]:
            condition = torch.nn.functional.interpolate(
                batch["lr"].float(), size=samples.shape[-2:], mode="nearest"
            )
            self._rows += [to_unit(condition), to_unit(samples), to_unit(batch["hr"])]
        else:
            self._rows.append(to_unit(samples))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._rows or not trainer.is_global_zero or trainer.sanity_checking:
            return
        nrow = len(self._rows[0])
        grid = make_grid(torch.cat(self._rows)[: self.max_images * 3], nrow=nrow, padding=1)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        path = self.dirpath / f"val_step{trainer.global_step:08d}.png"
        save_image(grid, path)
        log_image(trainer, "val/samples", grid, trainer.global_step)


def unused_directory(path: Path) -> Path:
    """`path` when it is absent or empty, else the first absent or empty `path-2`, `path-3`, ..."""
    candidate, number = path, 1
    while candidate.is_dir() and any(candidate.iterdir()):
        number += 1
        candidate = path.with_name(f"{path.name}-{number}")
    return candidate


class SampleWriter(BasePredictionWriter):
    """Writes each predicted image as `<dirpath>/<name>.png` and all of them as `<dirpath>/grid.png`.

    A directory that already holds images (an earlier predict of the run, say with another sampler) is kept:
    this run writes to `<dirpath>-2` (then -3, ...), chosen by rank 0 for every process."""

    def __init__(self, dirpath: str, nrow: int = 8):
        super().__init__(write_interval="batch")
        self.dirpath = Path(dirpath)
        self.nrow = nrow
        self._images: list[torch.Tensor] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.dirpath = Path(trainer.strategy.broadcast(str(unused_directory(self.dirpath))))

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._images = []

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ):
        self.dirpath.mkdir(parents=True, exist_ok=True)
        images = to_unit(prediction["samples"])
        for image, name in zip(images, prediction["names"], strict=True):
            save_image(image, self.dirpath / f"{name}.png")
        self._images.append(images)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        if not self._images or not trainer.is_global_zero:
            return
        path = self.dirpath / "grid.png"
        save_image(make_grid(torch.cat(self._images), nrow=self.nrow, padding=1), path)
        rank_zero_info(f"Sample grid: {path.resolve()}")
