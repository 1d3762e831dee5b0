"""Data: image files (`io`), degradations (`degradations`), albumentations pipelines
(`transforms`), datasets (`datasets`), the training sampler (`samplers`) and the Lightning
DataModule (`datamodule.ImageDataModule`, the `_target_` of the `data` config group).

Nothing is imported here so that `lit_diffsr.data.io` (used by the `prepare` scripts) stays free
of the torch / Lightning import cost.
"""
