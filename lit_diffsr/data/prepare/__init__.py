"""Dataset preparation for the published set-ups: `python -m lit_diffsr.data.prepare <dataset> ...`.

One module per dataset (imagenet, faces for ffhq/celebahq, div2k, srtest, cifar10) turns a
downloaded tree into a `Plan`; `engine.execute` runs it (parallel, resumable, atomic, read-only on
the source, counts checked, `<dst>/prepare_report.json`). data/README.md gives the layouts.
"""

from lit_diffsr.data.prepare.cli import DATASETS, main
from lit_diffsr.data.prepare.engine import REPORT_NAME, PrepareError, PrepareResult
from lit_diffsr.data.prepare.resize import (
    bicubic_downscale,
    center_crop_square,
    crop_to_multiple,
    resize_square,
)

__all__ = [
    "DATASETS",
    "REPORT_NAME",
    "PrepareError",
    "PrepareResult",
    "bicubic_downscale",
    "center_crop_square",
    "crop_to_multiple",
    "main",
    "resize_square",
]
