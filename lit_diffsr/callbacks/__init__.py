from lit_diffsr.callbacks.metrics import FIDCallback, ImageMetrics
from lit_diffsr.callbacks.samples import SampleGrid, SampleWriter

__all__ = ["FIDCallback", "ImageMetrics", "SampleGrid", "SampleWriter"]
