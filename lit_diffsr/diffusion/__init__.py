"""Diffusion math: schedules, Gaussian diffusion, samplers, guidance, the I2SB bridge, DDRM.
Pure torch, no Lightning."""

from lit_diffsr.diffusion.bridge import SchrodingerBridge, gaussian_product_coef
from lit_diffsr.diffusion.conditioning import NoiseAugmentation, blur_augmentation, gaussian_kernels
from lit_diffsr.diffusion.ddrm import ddrm_sample, ddrm_timesteps
from lit_diffsr.diffusion.ddrm_operators import (
    AnisotropicDeblurring,
    Colorization,
    Deblurring,
    Denoising,
    GeneralH,
    Inpainting,
    SeparableOperator,
    SRConv,
    SuperResolution,
    SVDOperator,
    bicubic_kernel,
    gaussian_kernel,
    uniform_kernel,
)
from lit_diffsr.diffusion.embeddings import timestep_embedding
from lit_diffsr.diffusion.gaussian_diffusion import GaussianDiffusion, ModelFn, space_timesteps
from lit_diffsr.diffusion.guidance import classifier_free_guidance, drop_labels
from lit_diffsr.diffusion.inference_schedule import (
    InferenceSchedule,
    candidate_schedules,
    search_schedule,
)
from lit_diffsr.diffusion.losses import (
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    mean_flat,
    normal_kl,
)
from lit_diffsr.diffusion.noise_level import ContinuousNoiseLevel, noise_levels_by_model_step
from lit_diffsr.diffusion.oracles import GaussianOracle
from lit_diffsr.diffusion.samplers import (
    quadratic_respacing,
    sample_ancestral,
    sample_ddim,
    sample_dpm_solver_pp,
)
from lit_diffsr.diffusion.schedules import get_beta_schedule
from lit_diffsr.diffusion.timestep_samplers import LossSecondMomentSampler, UniformSampler

__all__ = [
    "AnisotropicDeblurring",
    "Colorization",
    "Deblurring",
    "Denoising",
    "GeneralH",
    "Inpainting",
    "SRConv",
    "SVDOperator",
    "SchrodingerBridge",
    "SeparableOperator",
    "SuperResolution",
    "bicubic_kernel",
    "ddrm_sample",
    "ddrm_timesteps",
    "gaussian_kernel",
    "gaussian_product_coef",
    "uniform_kernel",
    "GaussianDiffusion",
    "GaussianOracle",
    "LossSecondMomentSampler",
    "ModelFn",
    "UniformSampler",
    "approx_standard_normal_cdf",
    "classifier_free_guidance",
    "discretized_gaussian_log_likelihood",
    "drop_labels",
    "get_beta_schedule",
    "mean_flat",
    "normal_kl",
    "quadratic_respacing",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpm_solver_pp",
    "space_timesteps",
    "timestep_embedding",
    "ContinuousNoiseLevel",
    "InferenceSchedule",
    "candidate_schedules",
    "search_schedule",
    "NoiseAugmentation",
    "blur_augmentation",
    "gaussian_kernels",
    "noise_levels_by_model_step",
]
