"""Inference that spans models: the cascade (base -> SR -> SR)."""

from lit_diffsr.pipelines.cascade import StageOptions, build_stages, sample_cascade, truncation_step

__all__ = ["StageOptions", "build_stages", "sample_cascade", "truncation_step"]
