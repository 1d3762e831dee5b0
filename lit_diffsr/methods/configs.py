"""Typed configs: the one place of every default and every check of a method's settings, per concept.

Each dataclass below is built from the dict of a `model.<key>` block by `build_config`, which names an
unknown key as `model.<key>`; its `__post_init__` checks the values. The model YAMLs do not restate these
defaults: `register_configs` stores each as a node of Hydra's ConfigStore (group `settings/<concept>`) and a
model YAML pulls the node in its defaults list, e.g. `- /settings/gaussian_sampler@sampler`, then sets only
what differs. Nodes are stored as plain dicts, so a key typed wrong on the command line (`+model.sampler.x=1`)
reaches `build_config` and its one-line error. Hyper-parameters in checkpoints stay plain dicts
(`dataclasses.asdict`), so old checkpoints and `weights_only` loading are unaffected.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from lit_diffsr.errors import ConfigError

Config = TypeVar("Config")

# Kept free of torch: `lit_diffsr.conf` imports this module to register the nodes before Hydra composes.
GAUSSIAN_SAMPLERS = ("ancestral", "ddim", "dpm_solver_pp")  # methods.sampling maps them to the functions
TIMESTEP_SAMPLERS = ("uniform", "loss_aware")


def reject_unknown_keys(given: Mapping, allowed, where: str) -> None:
    """A ConfigError naming `where` and the allowed keys when `given` holds any other key."""
    unknown = set(given) - set(allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} in {where}; allowed: {sorted(allowed)}")


def build_config(cls: type[Config], given: Any, key: str) -> Config:
    """`cls` from the dict (or DictConfig, or None) of `model.<key>`: its defaults for what is not given."""
    if isinstance(given, cls):
        return given
    if isinstance(given, DictConfig):
        given = OmegaConf.to_container(given, resolve=True)
    given = dict(given or {})
    reject_unknown_keys(given, [f.name for f in dataclasses.fields(cls)], f"model.{key}")
    return cls(**given)


def settings(cls: type, given: Any, key: str) -> dict:
    """The checked `model.<key>` block as the plain dict a method keeps and a checkpoint stores."""
    return dataclasses.asdict(build_config(cls, given, key))


# -- optimisation (every method) -------------------------------------------------------------------------
@dataclass(frozen=True)
class OptimConfig:
    """AdamW's lr, weight_decay (not applied to biases and norm scales) and betas; warmup_steps of linear
    warm-up, then a flat lr. Checked here so a message names the key (AdamW's own says only "Invalid")."""

    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        lr, weight_decay, betas = self.lr, self.weight_decay, tuple(self.betas)
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and lr > 0):
            raise ConfigError(f"model.optim.lr={lr!r} must be a positive number (e.g. 1e-4)")
        if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
            raise ConfigError(f"model.optim.weight_decay={weight_decay!r} must be a number >= 0")
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ConfigError(
                f"model.optim.betas={list(betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]"
            )
        if not (isinstance(self.warmup_steps, int) and self.warmup_steps >= 0):
            raise ConfigError(f"model.optim.warmup_steps={self.warmup_steps!r} must be an integer >= 0")


# -- Gaussian diffusion (classcond, SR3, cascade stages, LDM-SR) ----------------------------------------
@dataclass(frozen=True)
class GaussianDiffusionConfig:
    """The training process: beta schedule (linear | cosine | sqrt_linear | linspace) over num_timesteps with
    schedule_kwargs (e.g. start / end), prediction (eps | x0 | v), variance (fixed_small | fixed_large |
    learned_range), loss (mse | l1 | hybrid), timestep_sampler (uniform | loss_aware: how training draws
    t)."""

    schedule: str = "cosine"
    num_timesteps: int = 1000
    schedule_kwargs: dict = field(default_factory=dict)
    prediction: str = "eps"
    variance: str = "learned_range"
    loss: str = "hybrid"
    timestep_sampler: str = "uniform"

    def __post_init__(self) -> None:
        if self.timestep_sampler not in TIMESTEP_SAMPLERS:
            raise ConfigError(
                f"model.diffusion.timestep_sampler={self.timestep_sampler!r}; use 'uniform' or 'loss_aware'"
            )


@dataclass(frozen=True)
class GaussianSamplerConfig:
    """name (ancestral | ddim | dpm_solver_pp); steps: null = every training step, "ddim50", "250",
    per-section counts, or "quadN" (N steps on DDIM's quadratic spacing, which DPM-Solver++ wants at few
    steps); eta (DDIM); clip_denoised (clamp the predicted x0 to [-1, 1])."""

    name: str = "ddim"
    steps: Any = "ddim50"
    eta: float = 0.0
    clip_denoised: bool = True

    def __post_init__(self) -> None:
        if self.name not in GAUSSIAN_SAMPLERS:
            raise ConfigError(f"model.sampler.name={self.name!r}; use one of {sorted(GAUSSIAN_SAMPLERS)}")


# Saharia et al. 2022 (SR3) §4: T = 2000 training steps, linear betas 1e-6..1e-2, sigma_t^2 = beta_t
# (Alg. 2); an L1 loss on eps as the public reimplementation (mse for p = 2, SR3 eq. 6).
@dataclass(frozen=True)
class SR3DiffusionConfig(GaussianDiffusionConfig):
    """SR3's process: eps prediction with an L1 or L2 loss; t is drawn as a continuous noise level, so the
    only timestep sampler is uniform."""

    schedule: str = "linspace"
    num_timesteps: int = 2000
    schedule_kwargs: dict = field(default_factory=lambda: {"start": 1e-6, "end": 1e-2})
    variance: str = "fixed_large"
    loss: str = "l1"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prediction != "eps" or self.loss not in ("mse", "l1"):
            raise ConfigError(
                f"SR3 predicts eps with an L1 or L2 loss: set model.diffusion.prediction=eps "
                f"and model.diffusion.loss=l1|mse (got {self.prediction}, {self.loss})"
            )
        if self.timestep_sampler != "uniform":
            raise ConfigError(
                f"model.diffusion.timestep_sampler={self.timestep_sampler!r}: SR3 draws a continuous noise "
                "level uniformly (WaveGrad §3), it has no loss-aware step sampler; use 'uniform'"
            )


@dataclass(frozen=True)
class SR3SamplerConfig(GaussianSamplerConfig):
    """SR3's sampling: ancestral over 100 respaced steps (SR3 Alg. 2)."""

    name: str = "ancestral"
    steps: Any = "100"


@dataclass(frozen=True)
class SR3NoiseLevelConfig:
    """The continuous noise level sqrt(gamma) (SR3 §2.4 / WaveGrad): `variant` "sqrt_gamma" draws it uniformly
    in sqrt(gamma) (WaveGrad, the public reimplementation), "gamma" uniformly in gamma (SR3 as written);
    the UNet's float t is `scale` * sqrt(gamma)."""

    variant: str = "sqrt_gamma"
    scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.variant not in ("sqrt_gamma", "gamma"):
            raise ConfigError(f"model.noise_level_variant={self.variant!r}; use 'sqrt_gamma' or 'gamma'")


# -- conditioning augmentation of cascade stages (Ho et al. 2022, CDM §4.2) -------------------------------
@dataclass(frozen=True)
class BlurAugmentationConfig:
    """Gaussian blur of a `probability` fraction of the conditioning images, sigma in [low, high]; never at
    sampling unless `at_sampling`."""

    probability: float = 0.0
    sigma: tuple[float, float] = (0.4, 0.6)
    kernel_size: int = 3
    at_sampling: bool = False


@dataclass(frozen=True)
class NoiseAugmentationConfig:
    """Gaussian-noise augmentation with the low-resolution model's forward process (its schedule);
    max_level: the largest level s drawn at training (null = T)."""

    schedule: str = "cosine"
    num_timesteps: int = 1000
    schedule_kwargs: dict = field(default_factory=dict)
    max_level: int | None = None


@dataclass(frozen=True)
class AugmentationConfig:
    """blur; noise (null = off); sampling_level: the level s of `sample` without an aug_level option
    (validation, predict), chosen after training by the level search."""

    blur: Any = field(default_factory=BlurAugmentationConfig)
    noise: Any = None
    sampling_level: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "blur", build_config(BlurAugmentationConfig, self.blur, "augmentation.blur"))
        if self.noise is not None:
            noise = build_config(NoiseAugmentationConfig, self.noise, "augmentation.noise")
            object.__setattr__(self, "noise", noise)
        if self.noise is None and self.sampling_level:
            raise ConfigError("model.augmentation.sampling_level > 0 needs model.augmentation.noise")


# -- I²SB (Liu et al. 2023) ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class BridgeConfig:
    """n_steps (N), beta_max, beta_min of `SchrodingerBridge` (I²SB's symmetric beta schedule)."""

    n_steps: int = 1000
    beta_max: float = 0.3
    beta_min: float = 1e-4


@dataclass(frozen=True)
class BridgeSamplerConfig:
    """steps: NFE (1 to N-1); ot_ode: the deterministic bridge (training and sampling, as I²SB's --ot-ode);
    clip_denoised: clamp x̂0 to [-1, 1]; seed: the sampling noise (null = the global RNG)."""

    steps: int = 100
    ot_ode: bool = False
    clip_denoised: bool = False
    seed: int | None = None


# -- DDRM (Kawar et al. 2022) -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DDRMSamplerConfig:
    """steps (network evaluations, uniformly skipped through the prior's T), eta (η), eta_b (η_b): the
    paper's 20, 0.85, 1.0; clip (clamp x_θ to [-1, 1]) is ours: the reference code does not clip."""

    steps: int = 20
    eta: float = 0.85
    eta_b: float = 1.0
    clip: bool = True


# -- latent diffusion ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TilingConfig:
    """tile_size: tile side in LR pixels for inputs larger than it (null = never tile); overlap in LR
    pixels."""

    tile_size: int | None = None
    overlap: int = 8


@dataclass(frozen=True)
class AutoencoderLossConfig:
    """kl_weight (w_kl), perceptual_weight (w_p, 0 = no LPIPS), perceptual_net (vgg | alex),
    perceptual_weights (local path of the full LPIPS state_dict; null = the weights cache; never
    downloaded)."""

    kl_weight: float = 1.0e-6
    perceptual_weight: float = 1.0
    perceptual_net: str = "vgg"
    perceptual_weights: str | None = None


@dataclass(frozen=True)
class DiscriminatorConfig:
    """The `PatchDiscriminator` and its hinge term: switched on at start_step, weighted by `weight` (w_d)."""

    start_step: int = 50001
    weight: float = 0.5
    channels: int = 64
    num_layers: int = 3
    norm_groups: int = 32


# The nodes the model YAMLs compose (`/settings/<name>@<key>`): one per concept.
SETTINGS: dict[str, type] = {
    "optim": OptimConfig,
    "gaussian_diffusion": GaussianDiffusionConfig,
    "gaussian_sampler": GaussianSamplerConfig,
    "sr3_diffusion": SR3DiffusionConfig,
    "sr3_sampler": SR3SamplerConfig,
    "augmentation": AugmentationConfig,
    "blur_augmentation": BlurAugmentationConfig,
    "bridge": BridgeConfig,
    "bridge_sampler": BridgeSamplerConfig,
    "ddrm_sampler": DDRMSamplerConfig,
    "tiling": TilingConfig,
    "autoencoder_loss": AutoencoderLossConfig,
    "discriminator": DiscriminatorConfig,
}


def register_configs() -> None:
    """Store every node of SETTINGS in Hydra's ConfigStore (group `settings`), as plain dicts."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, cls in SETTINGS.items():
        store.store(group="settings", name=name, node=dataclasses.asdict(cls()))


register_configs()
