"""`python -m lit_diffsr sample pipeline=NAME [overrides]`: sample a cascade and write every stage's images.

Composes `conf/sample.yaml` with a pipeline from `conf/pipeline/`; writes
`<paths.output_dir>/<stage>/<sample>.png`, a grid per stage and the final grid `<paths.output_dir>/grid.png`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import make_grid, save_image

from lit_diffsr.callbacks.progress import ReverseStepLog
from lit_diffsr.diffusion.progress import reverse_step_listener
from lit_diffsr.errors import ConfigError
from lit_diffsr.pipelines.cascade import build_stages, sample_cascade
from lit_diffsr.runtime import hydra_job, register_resolvers, set_num_threads

log = logging.getLogger("lit_diffsr")
register_resolvers()  # ${lit_diffsr.hydra_record_subdir:...} in conf/hydra


def cascade_labels(
    labels: list[int] | None, num_samples: int, num_classes: int | None, seed: int
) -> torch.Tensor:
    """The labels to sample: the given ones repeated to `num_samples`, or drawn with `seed`."""
    if labels is not None:
        if not labels:
            raise ConfigError("pipeline.labels is an empty list: give class indices or null")
        return torch.as_tensor(list(labels), dtype=torch.long).repeat(num_samples)[:num_samples]
    if not num_classes:
        return torch.zeros(num_samples, dtype=torch.long)
    return torch.randint(num_classes, (num_samples,), generator=torch.Generator().manual_seed(seed))


def write_images(images: torch.Tensor, names: list[str], folder: Path, nrow: int = 8) -> Path:
    """Each image as `<folder>/<name>.png` and all of them as `<folder>/grid.png`; returns the grid's path."""
    folder.mkdir(parents=True, exist_ok=True)
    unit = ((images.float() + 1) / 2).clamp(0, 1)
    for image, name in zip(unit, names, strict=True):
        save_image(image, folder / f"{name}.png")
    save_image(make_grid(unit, nrow=nrow, padding=1), folder / "grid.png")
    return folder / "grid.png"


def run(cfg: DictConfig) -> list[torch.Tensor]:
    """Sample the configured cascade and write its images; returns every stage's output."""
    set_num_threads(cfg.num_threads)
    device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device
    device = "cpu" if device == "auto" else device
    pipeline = cfg.pipeline
    stages = build_stages(OmegaConf.to_container(pipeline.stages, resolve=True), device=device)
    num_classes = getattr(stages[0].method, "num_classes", None)
    labels = cascade_labels(pipeline.labels, int(pipeline.num_samples), num_classes, int(cfg.seed))
    # A log line at most every 10 s: stage, batch and reverse step (a cascade samples for minutes).
    progress = ReverseStepLog(every_s=10.0)
    with reverse_step_listener(progress):
        outputs = sample_cascade(stages, labels, seed=int(cfg.seed), batch_size=int(pipeline.batch_size),
                                 announce=progress.begin)
    output_dir = Path(cfg.paths.output_dir)
    names = [f"sample{i:05d}_class{int(label)}" for i, label in enumerate(labels)]
    for stage, images in zip(stages, outputs, strict=True):
        write_images(images, names, output_dir / stage.name)
    save_image(make_grid(((outputs[-1] + 1) / 2).clamp(0, 1), nrow=8, padding=1), output_dir / "grid.png")
    log.info("Cascade samples in %s", output_dir.resolve())
    return outputs


@hydra.main(version_base="1.3", config_path="../conf", config_name="sample")
def hydra_entry(cfg: DictConfig) -> None:
    hydra_job(run, cfg)
