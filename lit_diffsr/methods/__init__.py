from lit_diffsr.methods.base import DiffusionMethod, load_method
from lit_diffsr.methods.classcond import ClassConditionalDiffusion

__all__ = ["ClassConditionalDiffusion", "DiffusionMethod", "load_method"]
