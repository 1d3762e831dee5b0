"""One LightningModule per method; `load_method(path)` rebuilds any of them from a checkpoint."""

from lit_diffsr.methods.autoencoder import AutoencoderMethod
from lit_diffsr.methods.base import DiffusionMethod, load_method
from lit_diffsr.methods.classcond import ClassConditionalDiffusion
from lit_diffsr.methods.ddrm import DDRMRestoration
from lit_diffsr.methods.i2sb import I2SB
from lit_diffsr.methods.latent_i2sb import LatentI2SB
from lit_diffsr.methods.ldm_sr import LatentDiffusionSR
from lit_diffsr.methods.super_resolution import SR3, CascadeStage

__all__ = [
    "SR3",
    "AutoencoderMethod",
    "CascadeStage",
    "ClassConditionalDiffusion",
    "DDRMRestoration",
    "DiffusionMethod",
    "I2SB",
    "LatentDiffusionSR",
    "LatentI2SB",
    "load_method",
]
