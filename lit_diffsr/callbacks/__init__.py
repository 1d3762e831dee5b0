from lit_diffsr.callbacks.samples import SampleGrid, SampleWriter

__all__ = ["SampleGrid", "SampleWriter"]
