"""A Rich progress bar that reads the training loss back from the device at most once a second.

Lightning turns every metric logged with `prog_bar=True` into a Python number after every batch, and
`RichProgressBar` reads them again to draw them: two `.item()` calls a step, each making the host wait on a
GPU until the step's kernels have run, so the next step cannot be queued meanwhile. The methods log their
loss with `prog_bar=False` (it stays a device tensor in `trainer.callback_metrics`), and this bar reads the
metrics it shows from there at most every `metrics_every_s` seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    """`RichProgressBar` showing `shown` metrics from `trainer.callback_metrics`, read at most every
    `metrics_every_s` seconds (0: every batch, as Lightning's bar does). Other keyword arguments go to
    `RichProgressBar` (`refresh_rate`, `leave`, `theme`, ...)."""

    def __init__(self, shown: Sequence[str] = ("loss",), metrics_every_s: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if metrics_every_s < 0:
            raise ValueError(f"ProgressBar: metrics_every_s must be >= 0 seconds, got {metrics_every_s}")
        self.shown = tuple(shown)
        self.metrics_every_s = metrics_every_s
        self._shown_values: dict[str, float] = {}
        self._read_at = -math.inf

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        now = time.monotonic()
        if now - self._read_at >= self.metrics_every_s:
            self._read_at = now
            current = trainer.callback_metrics
            self._shown_values = {name: float(current[name]) for name in self.shown if name in current}
        return {**super().get_metrics(trainer, pl_module), **self._shown_values}
