"""Diffusion super-resolution conditioned on the upsampled low-resolution image: SR3 and CDM cascade stages.

Both models denoise the high-resolution image x_t while seeing the bicubic-upsampled low-resolution image;
the UNet input is the channel concatenation ``[x_t | upsample(lr)]`` (noisy HR first; Saharia et al. 2022,
SR3 §2.4; Ho et al. 2022, CDM §3). They differ in what else the network sees:
- ``SR3``: the continuous noise level sqrt(gamma) instead of a step (WaveGrad-style conditioning);
- ``CascadeStage``: the discrete step, the class label and the conditioning-augmentation level s.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from lit_diffsr.diffusion import (
    ContinuousNoiseLevel,
    InferenceSchedule,
    ModelFn,
    NoiseAugmentation,
    blur_augmentation,
    drop_labels,
    get_beta_schedule,
    noise_levels_by_model_step,
)
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import DiffusionMethod, SampleOutput, as_dict, check_options
from lit_diffsr.methods.configs import (
    AugmentationConfig,
    GaussianDiffusionConfig,
    GaussianSamplerConfig,
    NoiseAugmentationConfig,
    SR3DiffusionConfig,
    SR3NoiseLevelConfig,
    SR3SamplerConfig,
    build_config,
)
from lit_diffsr.methods.sampling import SAMPLER_OPTIONS, Diffusion, label_guided
from lit_diffsr.ops.resize import upsample_bicubic


def net_config(net: Any) -> Any:
    """A `_target_` config as a plain dict (saved in the checkpoint); a ready module passes through."""
    return net if isinstance(net, torch.nn.Module) else as_dict(net)


class ConditionalSuperResolution(DiffusionMethod):
    """Shared plumbing: the upsampled condition, the output size, sampling with a `model_fn` per subclass.

    `scale_factor` is the SR factor r: `lr` is r times smaller than `hr` and than the generated image.
    `diffusion` / `sampler` as in `lit_diffsr.methods.sampling.Diffusion` (the sampling process).
    """

    num_classes: int | None = None
    cond_upsample: str = "bicubic"
    diffusion_config: type[GaussianDiffusionConfig] = GaussianDiffusionConfig
    sampler_config: type[GaussianSamplerConfig] = GaussianSamplerConfig

    def __init__(
        self,
        net: Any,
        diffusion: dict,
        sampler: dict,
        scale_factor: int,
        optim: dict | None,
        val_sample_batches: int,
    ):
        super().__init__(net, optim=optim, val_sample_batches=val_sample_batches)
        if int(scale_factor) < 1:
            raise ConfigError(f"model.scale_factor={scale_factor} must be a positive integer SR factor")
        self.scale = int(scale_factor)
        if getattr(self.net, "cond_channels", None) != self.net.in_channels:
            raise ConfigError(
                f"model.net.cond_channels={getattr(self.net, 'cond_channels', None)} must equal "
                f"model.net.in_channels={self.net.in_channels}: the UNet sees [x_t | upsampled lr]"
            )
        self.diffusion = Diffusion(diffusion, sampler, self.diffusion_config, self.sampler_config)

    # -- to implement ------------------------------------------------------------------------------
    sampling_options: tuple[str, ...] = SAMPLER_OPTIONS

    def model_fn(self, cond, y, aug_level, options=None, steps=None) -> ModelFn:
        """model_fn(x_t, model_t) of the sampling process of `steps`, given the upsampled condition and this
        call's sampling `options` (the method's own keys of them: popped)."""
        raise NotImplementedError

    def sampling_condition(self, lr: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The low-resolution input as the network gets it at sampling, and its augmentation level."""
        return lr, 0

    # -- shared ------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data_scale = getattr(self.datamodule, "lr_scale", None)
        if data_scale is not None and data_scale != self.scale:
            raise ConfigError(
                f"model.scale_factor={self.scale} but the data's lr is {data_scale}x smaller than hr; "
                f"set model.scale_factor={data_scale}"
            )
        self.check_class_count(self.num_classes)

    def condition(self, lr: torch.Tensor) -> torch.Tensor:
        """lr upsampled by `scale_factor`: the image concatenated to x_t (SR3 §2.4). Bicubic, or bilinear
        (`cond_upsample`) as ADM's SuperResModel does inside its forward (Dhariwal & Nichol 2021, code)."""
        if lr.ndim != 4:
            raise ValueError(f"lr must be (B, C, h, w), got shape {tuple(lr.shape)}")
        if self.cond_upsample == "bilinear":
            size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
            return F.interpolate(lr, size=size, mode="bilinear", align_corners=False)
        return upsample_bicubic(lr, self.scale)

    def check_pair(self, batch: dict) -> None:
        self.require_lr(batch)
        lr, hr = batch["lr"], batch.get("hr")
        if hr is not None and tuple(hr.shape[-2:]) != (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale):
            raise ConfigError(
                f"model.scale_factor={self.scale} but lr is {tuple(lr.shape[-2:])} and hr "
                f"{tuple(hr.shape[-2:])}; set model.scale_factor to the data's SR factor"
            )

    def labels(self, batch: dict) -> torch.Tensor | None:
        return batch.get("y") if self.num_classes else None

    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """Super-resolve `condition["lr"]` (labels `condition["y"]` for a class-conditional stage).

        options: the sampler's name, eta, clip_denoised; a cascade stage's guidance_scale and aug_level: with
        aug_level, lr is already at that augmentation level (a cascade's z_s) and is not augmented again;
        without it, lr is augmented as at validation (`sampling_condition`). `stop_step` truncates this
        stage's own reverse chain (its output then is x_s, for a next stage)."""
        self.check_pair(condition)
        options = check_options(options, (*self.sampling_options, "aug_level"), type(self).__name__)
        if "aug_level" in options:
            lr, level = condition["lr"], int(options.pop("aug_level"))
        else:
            lr, level = self.sampling_condition(condition["lr"])
        cond = self.condition(lr.to(self.device))
        shape = (len(cond), self.net.in_channels, *cond.shape[-2:])
        model_fn = self.model_fn(cond, self.labels(condition), level, options, steps)
        images = self.diffusion.sample(
            model_fn, shape, self.device, seed, steps=steps, stop_step=stop_step, overrides=options
        )
        return SampleOutput(images)


class SR3(ConditionalSuperResolution):
    """SR3 (Saharia et al. 2022): eps-prediction conditioned on the continuous noise level sqrt(gamma).

    Training draws sqrt(gamma) between neighbouring entries of the table of the training schedule
    (`noise_level_variant`: "sqrt_gamma" as WaveGrad / the public reimplementation, "gamma" as SR3 §2.4)
    and minimises ||f(y_tilde, sqrt(gamma)) - eps||_p with p from `diffusion.loss` ("l1" | "mse", SR3 eq. 6).
    The UNet's float t is `noise_level_scale * sqrt(gamma)`: with the default 1000 the sinusoidal
    embedding sees the same range [0, 1000] as the discrete steps of the other methods (WaveGrad scales
    by 5000 for its own embedding). Sampling uses the (respaced) discrete process of `diffusion` /
    `sampler`, looking up sqrt(abar) of each sampled step, so the full chain, any respacing and DDIM work.
    Defaults and checks: `SR3DiffusionConfig`, `SR3SamplerConfig`, `SR3NoiseLevelConfig` (methods/configs.py).
    `inference_schedule` (an `InferenceSchedule`, None = the above) replaces that process with a sampling
    schedule of its own (SR3 §4, WaveGrad §4): `lit_diffsr.methods.sr3_schedule` searches one and saves it
    beside the checkpoint, where validate / test / predict (`train.run_command`) find it.
    """

    diffusion_config = SR3DiffusionConfig
    sampler_config = SR3SamplerConfig

    def __init__(
        self,
        net: Any,
        diffusion: dict | None = None,
        sampler: dict | None = None,
        scale_factor: int = 4,
        noise_level_variant: str = "sqrt_gamma",
        noise_level_scale: float = 1000.0,
        optim: dict | None = None,
        val_sample_batches: int = 1,
    ):
        net = net_config(net)
        diffusion, sampler, optim = map(as_dict, (diffusion, sampler, optim))
        super().__init__(net, diffusion, sampler, scale_factor, optim, val_sample_batches)
        # Plain containers, so checkpoints load with weights_only=True (a ready module is not saved).
        self.save_hyperparameters(ignore=["net"] if isinstance(net, torch.nn.Module) else None)
        level = SR3NoiseLevelConfig(noise_level_variant, float(noise_level_scale))
        self.noise_level = ContinuousNoiseLevel(self.diffusion.process.betas, level.variant)
        self.noise_level_scale = level.scale
        self.inference_schedule: InferenceSchedule | None = None

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        self.check_pair(batch)
        cond = self.condition(batch["lr"])

        def predict(x_noisy: torch.Tensor, sqrt_gamma: torch.Tensor) -> torch.Tensor:
            return self.net(x_noisy, self.noise_level_scale * sqrt_gamma, cond=cond)

        terms = self.noise_level.training_losses(
            predict, batch["hr"], loss=self.diffusion.config["loss"]
        )
        return {"loss": terms["loss"].mean(), "mse": terms["mse"].mean()}

    def model_fn(self, cond, y, aug_level, options=None, steps=None) -> ModelFn:
        if aug_level:
            raise ConfigError("SR3 has no conditioning augmentation: use aug_level 0 for an SR3 stage")
        levels = noise_levels_by_model_step(self.diffusion.sampling_process_for(steps)).to(cond.device)

        def predict(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
            # The net sees the continuous level of the step being sampled (WaveGrad §3), not the step.
            sqrt_gamma = levels[model_t].to(x_t.dtype)
            return self.net(x_t, self.noise_level_scale * sqrt_gamma, cond=cond)

        return predict

    # -- inference noise schedule (SR3 §4, WaveGrad §4); see lit_diffsr.methods.sr3_schedule ------------
    @torch.no_grad()
    def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput:
        """As `ConditionalSuperResolution.sample`, on an inference schedule (an `InferenceSchedule`) when
        `options["schedule"]` gives one or `inference_schedule` is set, and the call chooses no steps,
        stop_step or aug_level of its own."""
        options = dict(options or {})
        schedule = options.pop("schedule", self.inference_schedule)
        if schedule is None or steps is not None or stop_step is not None or "aug_level" in options:
            return super().sample(condition, seed=seed, steps=steps, stop_step=stop_step, options=options)
        self.check_pair(condition)
        options = check_options(options, self.sampling_options, type(self).__name__)
        cond = self.condition(condition["lr"].to(self.device))
        levels = schedule.levels().to(self.device)

        def predict(x_t: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            return self.net(x_t, self.noise_level_scale * levels[step].to(x_t.dtype), cond=cond)

        images = self.diffusion.sample(
            predict, cond.shape, self.device, seed, overrides=options,
            process=schedule.process(self.diffusion.config["variance"]),
            start=lambda noise: schedule.initial_state(cond, noise),
        )
        return SampleOutput(images)


COND_UPSAMPLING = ("bicubic", "bilinear")


class CascadeStage(ConditionalSuperResolution):
    """A class-conditional SR stage of a cascade with conditioning augmentation (Ho et al. 2022, CDM §4.2).

    The UNet gets [x_t | upsample(z_s)], the step t, the label y (`num_classes`, with `label_dropout` for
    classifier-free guidance at `guidance_scale`) and the augmentation level s (`aug_level`, in steps
    0..T of the low-resolution process; needs `net.use_aug_level`).
    `augmentation`: `blur` {probability, sigma: [low, high], kernel_size, at_sampling}; `noise` null or
    {schedule, num_timesteps, schedule_kwargs: the low-resolution model's schedule, max_level: largest s
    drawn at training (null = T)}; `sampling_level`: s at sampling (non-truncated, on the given lr).
    `cond_upsample`: how lr is brought to the output size, bicubic | bilinear (ADM's upsamplers).
    """

    def __init__(
        self,
        net: Any,
        diffusion: dict | None = None,
        sampler: dict | None = None,
        scale_factor: int = 4,
        num_classes: int | None = None,
        label_dropout: float = 0.0,
        guidance_scale: float = 1.0,
        augmentation: dict | None = None,
        cond_upsample: str = "bicubic",
        optim: dict | None = None,
        val_sample_batches: int = 1,
    ):
        if cond_upsample not in COND_UPSAMPLING:
            raise ConfigError(
                f"model.cond_upsample={cond_upsample!r}; use one of {', '.join(COND_UPSAMPLING)}"
            )
        net = net_config(net)
        diffusion, sampler, optim, augmentation = map(as_dict, (diffusion, sampler, optim, augmentation))
        # A new name: save_hyperparameters stores the arguments' current values, which must stay plain.
        augmentation_config = build_config(AugmentationConfig, augmentation, "augmentation")
        super().__init__(net, diffusion, sampler, scale_factor, optim, val_sample_batches)
        self.cond_upsample = cond_upsample
        # Plain containers, so checkpoints load with weights_only=True (a ready module is not saved).
        self.save_hyperparameters(ignore=["net"] if isinstance(net, torch.nn.Module) else None)
        self.num_classes = num_classes
        self.label_dropout = label_dropout
        self.guidance_scale = guidance_scale
        self.blur = dataclasses.asdict(augmentation_config.blur)  # plain values: Lightning walks attributes
        self.noise_augmentation = self._noise_augmentation(augmentation_config.noise)
        self.sampling_level = int(augmentation_config.sampling_level)
        if self.noise_augmentation is not None:
            try:
                self.noise_augmentation.check_level(self.sampling_level)
            except ValueError as error:
                raise ConfigError(f"model.augmentation.sampling_level: {error}") from None

    def _noise_augmentation(self, noise: NoiseAugmentationConfig | None) -> NoiseAugmentation | None:
        if noise is None:
            if self.net.use_aug_level:
                raise ConfigError("model.net.use_aug_level=true but model.augmentation.noise is null")
            return None
        if not self.net.use_aug_level:
            raise ConfigError(
                "model.augmentation.noise needs the level embedding: set model.net.use_aug_level=true"
            )
        betas = get_beta_schedule(noise.schedule, int(noise.num_timesteps), **dict(noise.schedule_kwargs))
        return NoiseAugmentation(betas, noise.max_level)

    def _augment(self, lr: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training: blur a fraction of the images, draw s ~ U{0..max_level} and noise to z_s (CDM §4.2).
        Evaluation: no blur (unless at_sampling) and s = sampling_level."""
        blur = self.blur
        if blur["probability"] > 0 and (training or blur["at_sampling"]):
            lr, _, _ = blur_augmentation(lr, blur["probability"], blur["sigma"], int(blur["kernel_size"]))
        if self.noise_augmentation is None:
            return lr, None
        if training:
            levels = self.noise_augmentation.sample_levels(len(lr), lr.device)
        else:
            levels = torch.full((len(lr),), self.sampling_level, dtype=torch.long, device=lr.device)
        return self.noise_augmentation.apply(lr, levels), levels

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        self.check_pair(batch)
        lr, levels = self._augment(batch["lr"], self.training)
        cond = self.condition(lr)
        aug_level = None if levels is None else levels.float()
        y = self.labels(batch)
        if y is not None and self.training and self.label_dropout > 0:
            y = drop_labels(y, self.num_classes, self.label_dropout)  # Ho & Salimans 2022, Alg. 1
        return self.diffusion.training_losses(
            lambda x_t, t: self.net(x_t, t, y=y, cond=cond, aug_level=aug_level), batch["hr"]
        )

    def sampling_condition(self, lr: torch.Tensor) -> tuple[torch.Tensor, int]:
        lr, _ = self._augment(lr, training=False)
        return lr, self.sampling_level

    sampling_options = (*SAMPLER_OPTIONS, "guidance_scale")

    def model_fn(self, cond, y, aug_level, options=None, steps=None) -> ModelFn:
        if self.noise_augmentation is None:
            if aug_level:
                raise ConfigError("this stage was trained without noise augmentation: use aug_level 0")
            aug_levels = None
        else:
            self.noise_augmentation.check_level(aug_level)
            aug_levels = torch.full((len(cond),), float(aug_level), device=cond.device)
        if self.num_classes and y is None:
            raise ConfigError(f"this stage is class-conditional ({self.num_classes} classes): pass labels y")
        y = y.to(cond.device) if y is not None else None

        def net_fn(x_t, t, labels, cond, aug_level=None):
            return self.net(x_t, t, y=labels, cond=cond, aug_level=aug_level)

        shared = {"cond": cond} if aug_levels is None else {"cond": cond, "aug_level": aug_levels}
        guidance_scale = float((options or {}).pop("guidance_scale", self.guidance_scale))
        return label_guided(net_fn, y, self.num_classes, guidance_scale, shared)
