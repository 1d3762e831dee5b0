from lit_diffsr.methods.base import DiffusionMethod
from lit_diffsr.methods.classcond import ClassConditionalDiffusion

__all__ = ["ClassConditionalDiffusion", "DiffusionMethod"]
