"""Cascaded sampling: a class-conditional base model, then any number of super-resolution stages.

Ho et al. 2022 (CDM), Alg. 1-2 and §4.2: every SR stage receives the previous stage's output z_s at its
augmentation level s (s = 0: the clean output). Two hand-overs:
- truncated: the previous stage's reverse chain stops at step s and hands z_s over as it is;
- non-truncated: the previous chain runs to z_0, which is re-noised with q(z_s | z_0).
Stages are trained methods loaded from their checkpoints (`load_method`), sampled in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import DiffusionMethod, load_method
from lit_diffsr.methods.classcond import ClassConditionalDiffusion
from lit_diffsr.methods.configs import reject_unknown_keys
from lit_diffsr.methods.super_resolution import ConditionalSuperResolution

HANDOVERS = ("truncated", "non_truncated")
SAMPLERS = ("ancestral", "ddim")


@dataclass(frozen=True)
class StageOptions:
    """Per-stage sampling options; None keeps what the checkpoint was trained / configured with. They are
    handed to the stage's `sample` on every call, never written onto the loaded method.

    sampler: "ancestral" | "ddim"; steps: a respacing ("100", "ddim25") or "full" (every training step);
    eta: DDIM's eta; guidance_scale: classifier-free guidance; aug_level: s handed to this stage (0 = off);
    handover: "truncated" | "non_truncated" (how the previous stage produces z_s).
    """

    name: str
    method: DiffusionMethod
    sampler: str | None = None
    steps: str | None = None
    eta: float | None = None
    guidance_scale: float | None = None
    aug_level: int = 0
    handover: str = "non_truncated"

    def __post_init__(self) -> None:
        where = f"pipeline.stages.{self.name}"
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ConfigError(f"{where}.sampler={self.sampler!r}; use one of {SAMPLERS} or null")
        if self.handover not in HANDOVERS:
            raise ConfigError(f"{where}.handover={self.handover!r}; use one of {HANDOVERS}")
        if self.guidance_scale is not None and not hasattr(self.method, "guidance_scale"):
            raise ConfigError(
                f"{where}.guidance_scale: a {type(self.method).__name__} has no classifier-free guidance; "
                "set it to null"
            )
        if self.aug_level:
            augmentation = getattr(self.method, "noise_augmentation", None)
            if augmentation is None:
                raise ConfigError(
                    f"{where}.aug_level={self.aug_level}: this stage was trained without noise "
                    "augmentation; set aug_level: 0"
                )
            try:
                augmentation.check_level(self.aug_level)
            except ValueError as error:
                raise ConfigError(f"{where}.aug_level: {error}") from None

    @property
    def sampling_steps(self) -> str | None:
        return None if self.steps is None else str(self.steps)

    def sampling_options(self) -> dict[str, Any]:
        """The options of this stage's `sample` calls (those set; the checkpoint's settings for the rest)."""
        given = {"name": self.sampler, "eta": self.eta, "guidance_scale": self.guidance_scale}
        return {key: value for key, value in given.items() if value is not None}


def truncation_step(
    previous: DiffusionMethod, stage: StageOptions, steps: str | None = None
) -> tuple[int, int]:
    """(stop_step in the previous stage's sampling process for `steps`, the level s it really reaches).

    The chain can only stop on one of its (respaced) steps: the one whose original step is nearest to
    s - 1 (the level-s noise, see `lit_diffsr.diffusion.conditioning`). Truncation needs the stage's
    augmentation process to be the previous model's own forward process (CDM §4.2).
    """
    augmentation = stage.method.noise_augmentation
    trained = previous.diffusion.process
    if augmentation.num_timesteps != trained.num_timesteps or not np.allclose(
        augmentation.process.alphas_cumprod, trained.alphas_cumprod, rtol=1e-6
    ):
        raise ConfigError(
            f"pipeline.stages.{stage.name}: truncated hand-over needs the stage's augmentation "
            "schedule (model.augmentation.noise) to equal the previous model's diffusion schedule; "
            "they differ, so use handover: non_truncated"
        )
    original_steps = previous.diffusion.sampling_process_for(steps).timestep_map.numpy()
    stop_step = int(np.argmin(np.abs(original_steps - (stage.aug_level - 1))))
    return stop_step, int(original_steps[stop_step]) + 1


def _seed(seed: int, batch_start: int, stage_index: int) -> int:
    # Distinct, reproducible streams per batch and stage.
    return seed + 1_000_003 * stage_index + batch_start


@torch.no_grad()
def sample_cascade(
    stages: list[StageOptions], labels: torch.Tensor, seed: int = 0, batch_size: int = 16,
    announce: Callable[[str], None] | None = None,
) -> list[torch.Tensor]:
    """Run the cascade for `labels`; returns every stage's output (B, C, H_k, W_k), images in [-1, 1].

    A stage whose successor takes a truncated hand-over outputs its z_s (noisy, as handed over, unclipped).
    `announce("stage sr32 batch 2/3")`, when given, is told which stage and batch starts (for progress).
    """
    if not stages:
        raise ConfigError("pipeline.stages is empty: give a base model and SR stages")
    if not isinstance(stages[0].method, ClassConditionalDiffusion):
        raise ConfigError(
            f"pipeline.stages.{stages[0].name} must be a base model (ClassConditionalDiffusion); "
            f"got {type(stages[0].method).__name__}"
        )
    for stage in stages[1:]:
        if not isinstance(stage.method, ConditionalSuperResolution):
            raise ConfigError(
                f"pipeline.stages.{stage.name} must be a super-resolution model (SR3, "
                f"CascadeStage); got {type(stage.method).__name__}"
            )
    outputs: list[list[torch.Tensor]] = [[] for _ in stages]
    for start in range(0, len(labels), batch_size):
        y = labels[start : start + batch_size]
        where = f"batch {start // batch_size + 1}/{-(-len(labels) // batch_size)}"
        for index, batch_out in enumerate(_sample_batch(stages, y, seed, start, announce, where)):
            outputs[index].append(batch_out.cpu())
    return [torch.cat(images) for images in outputs]


def _sample_batch(
    stages: list[StageOptions], y: torch.Tensor, seed: int, batch_start: int,
    announce: Callable[[str], None] | None = None, where: str = "",
) -> list[torch.Tensor]:
    results = []
    previous_output, level = None, 0
    for index, stage in enumerate(stages):
        method = stage.method
        if announce is not None:
            announce(f"stage {stage.name} {where}")
        following = stages[index + 1] if index + 1 < len(stages) else None
        truncated = following is not None and following.aug_level > 0 and following.handover == "truncated"
        stop_step, next_level = (
            truncation_step(method, following, stage.sampling_steps) if truncated else (None, 0)
        )
        condition = {"y": y.to(method.device)}
        options = stage.sampling_options()
        if index > 0:
            condition["lr"] = previous_output
            options["aug_level"] = level
        output = method.sample(
            condition, seed=_seed(seed, batch_start, index), steps=stage.sampling_steps,
            stop_step=stop_step, options=options,
        ).images
        results.append(output)
        if following is None:
            break
        if truncated:
            previous_output, level = output, next_level
        elif following.aug_level > 0:
            # Non-truncated: q(z_s | z_0) on the finished sample (CDM §4.2), with reproducible noise.
            generator = torch.Generator().manual_seed(_seed(seed, batch_start, index) + 1)
            noise = torch.randn(output.shape, generator=generator).to(output)
            levels = torch.full((len(output),), following.aug_level, dtype=torch.long)
            previous_output = following.method.noise_augmentation.apply(output, levels, noise)
            level = following.aug_level
        else:
            previous_output, level = output.clamp(-1, 1), 0
    return results


def build_stages(specs: Mapping[str, Mapping[str, Any]], device: str = "cpu") -> list[StageOptions]:
    """Load every stage's checkpoint (EMA weights) in config order: {name: {checkpoint, sampler, ...}}."""
    stages = []
    for name, spec in specs.items():
        spec = dict(spec)
        if not spec.get("checkpoint"):
            raise ConfigError(
                f"pipeline.stages.{name}.checkpoint is missing: pass the .ckpt of a trained model"
            )
        where = f"pipeline.stages.{name}.checkpoint"
        method = load_method(spec.pop("checkpoint"), map_location=device, what=where).eval()
        options = set(StageOptions.__dataclass_fields__) - {"name", "method"}
        reject_unknown_keys(spec, {"checkpoint", *options}, f"pipeline.stages.{name}")
        stages.append(StageOptions(name=name, method=method, **spec))
    return stages
