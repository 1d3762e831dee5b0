from lit_diffsr.callbacks.divergence import DivergenceGuard
from lit_diffsr.callbacks.ema import ForeachEMA
from lit_diffsr.callbacks.metrics import FIDCallback, ImageMetrics
from lit_diffsr.callbacks.progress import ProgressBar
from lit_diffsr.callbacks.samples import SampleGrid, SampleWriter

__all__ = [
    "DivergenceGuard",
    "FIDCallback",
    "ForeachEMA",
    "ImageMetrics",
    "ProgressBar",
    "SampleGrid",
    "SampleWriter",
]
