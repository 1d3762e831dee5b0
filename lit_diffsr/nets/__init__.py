"""Networks: the ADM-style UNet used by every diffusion method."""

from lit_diffsr.nets.unet import UNet

__all__ = ["UNet"]
