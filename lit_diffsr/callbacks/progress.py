"""Progress of every command, on a terminal and in a log file, without extra host-device syncs.

On a terminal, `ProgressBar` is Lightning's Rich bar with two changes. Lightning turns every metric logged
with `prog_bar=True` into a Python number after every batch, and `RichProgressBar` reads them again to draw
them: two `.item()` calls a step, each making the host wait on a GPU until the step's kernels have run, so
the next step cannot be queued meanwhile. The methods log their loss with `prog_bar=False` (it stays a
device tensor in `trainer.callback_metrics`), and this bar reads the metrics it shows from there at most
every `metrics_every_s` seconds. And it shows the reverse steps of the batch being sampled.

When stdout is not a terminal (a Slurm `.out`, `nohup`, `make demo > log`) a live bar draws nothing useful,
so `LogProgress` writes plain log lines instead, at most one every `every_s` seconds: the training step
against max_steps, the loss (read from the device once per line), steps/s and the time left; and, while
sampling, the batch and its reverse step. `progress_display` picks one of the two.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress import ProgressBar as LightningProgressBar

from lit_diffsr.diffusion.progress import set_reverse_step_listener

log = logging.getLogger("lit_diffsr")


def duration(seconds: float) -> str:
    """`1:02:03` / `2:03` for a number of seconds; `?` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Rate:
    """Progress of a count towards a total: units per second since the previous `tick` and the time left."""

    def __init__(self) -> None:
        self.restart(0)

    def restart(self, done: int) -> None:
        self.started = self.ticked = time.monotonic()
        self.done_at_tick = done

    def due(self, every_s: float) -> bool:
        return time.monotonic() - self.ticked >= every_s

    def tick(self, done: int, total: float) -> tuple[float, float]:
        """(units per second since the last tick, seconds left at that pace)."""
        now = time.monotonic()
        per_second = (done - self.done_at_tick) / max(now - self.ticked, 1e-9)
        self.ticked, self.done_at_tick = now, done
        left = (total - done) / per_second if per_second > 0 else math.inf
        return per_second, left


def step_total(trainer: L.Trainer) -> float:
    """The step the fit stops at: max_steps, else what max_epochs implies (inf when neither bounds it)."""
    return trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches


class SamplingProgress:
    """Mixin for a Lightning progress bar: while a validation / test / predict batch runs, the reverse steps
    its sampler reports go to `show_reverse_step(done, total)`."""

    def show_reverse_step(self, done: int, total: int) -> None:
        raise NotImplementedError

    def _listen(self) -> None:
        set_reverse_step_listener(self.show_reverse_step)

    def _stop_listening(self) -> None:
        set_reverse_step_listener(None)

    def on_validation_batch_start(self, *args, **kwargs) -> None:
        super().on_validation_batch_start(*args, **kwargs)
        self._listen()

    def on_test_batch_start(self, *args, **kwargs) -> None:
        super().on_test_batch_start(*args, **kwargs)
        self._listen()

    def on_predict_batch_start(self, *args, **kwargs) -> None:
        super().on_predict_batch_start(*args, **kwargs)
        self._listen()

    def on_validation_batch_end(self, *args, **kwargs) -> None:
        self._stop_listening()
        super().on_validation_batch_end(*args, **kwargs)

    def on_test_batch_end(self, *args, **kwargs) -> None:
        self._stop_listening()
        super().on_test_batch_end(*args, **kwargs)

    def on_predict_batch_end(self, *args, **kwargs) -> None:
        self._stop_listening()
        super().on_predict_batch_end(*args, **kwargs)

    def teardown(self, *args, **kwargs) -> None:
        self._stop_listening()
        super().teardown(*args, **kwargs)


class ProgressBar(SamplingProgress, RichProgressBar):
    """`RichProgressBar` showing `shown` metrics from `trainer.callback_metrics`, read at most every
    `metrics_every_s` seconds (0: every batch, as Lightning's bar does), the step against max_steps, and
    the reverse steps of a batch being sampled. Other keyword arguments go to `RichProgressBar`
    (`refresh_rate`, `leave`, `theme`, ...)."""

    def __init__(self, shown: Sequence[str] = ("loss",), metrics_every_s: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if metrics_every_s < 0:
            raise ValueError(f"ProgressBar: metrics_every_s must be >= 0 seconds, got {metrics_every_s}")
        self.shown = tuple(shown)
        self.metrics_every_s = metrics_every_s
        self._shown_values: dict[str, float] = {}
        self._read_at = -math.inf
        self._sampling_task = None

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        now = time.monotonic()
        if now - self._read_at >= self.metrics_every_s:
            self._read_at = now
            current = trainer.callback_metrics
            self._shown_values = {name: float(current[name]) for name in self.shown if name in current}
        step = {"step": f"{trainer.global_step}/{step_total(trainer)}"} if trainer.training else {}
        return {**super().get_metrics(trainer, pl_module), **step, **self._shown_values}

    def _get_train_description(self, current_epoch: int) -> str:
        # Not "Epoch 3/-2" when only max_steps bounds the run: the step is in the metrics instead.
        if self.trainer.max_epochs in (None, -1):
            return "Training"
        return super()._get_train_description(current_epoch)

    def show_reverse_step(self, done: int, total: int) -> None:
        if self.progress is None or self.is_disabled:
            return
        if self._sampling_task is None or self._sampling_task not in self.progress.task_ids:
            self._sampling_task = self._add_task(total, "Reverse steps")
        self.progress.update(self._sampling_task, completed=done, total=total, visible=done < total)

    def _stop_listening(self) -> None:
        super()._stop_listening()
        if self.progress is not None and self._sampling_task in self.progress.task_ids:
            self.progress.update(self._sampling_task, visible=False)


class ReverseStepLog:
    """Log lines for a sampler's reverse steps, at most one every `every_s` seconds: `what` (e.g. "predict
    batch 2/4"), the step, steps/s and the time left in the chain. Used by `LogProgress` and `sample`."""

    def __init__(self, every_s: float, what: str = "sampling") -> None:
        self.every_s = every_s
        self.what = what
        self.rate = Rate()

    def begin(self, what: str) -> None:
        """A new batch or stage starts: name it, and time its chain from now."""
        self.what = what
        self.rate.restart(0)

    def __call__(self, done: int, total: int) -> None:
        if done <= self.rate.done_at_tick:  # another chain within the same batch
            self.rate.restart(done - 1)
        if self.rate.due(self.every_s) or done == total:
            per_second, left = self.rate.tick(done, total)
            log.info("%s: reverse step %d/%d, %.2f steps/s, %s left", self.what, done, total, per_second,
                     duration(left))


class LogProgress(SamplingProgress, LightningProgressBar):
    """Plain log lines instead of a bar, at most one every `every_s` seconds (0: every step), for output
    that is not a terminal: `fit step 213/800 (27%), loss 0.0523, 3.12 steps/s, 3:09 left`, and the batch
    and reverse step of validation / test / predict sampling. The loss is read back from the device once
    per line, never per step."""

    def __init__(self, every_s: float = 10.0, shown: Sequence[str] = ("loss",)) -> None:
        super().__init__()
        if every_s < 0:
            raise ValueError(f"LogProgress: every_s must be >= 0 seconds, got {every_s}")
        self.every_s = every_s
        self.shown = tuple(shown)
        self._enabled = True
        self.train_rate = Rate()
        self.steps = ReverseStepLog(every_s)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_rate.restart(trainer.global_step)
        if self._enabled:
            log.info("fit: step %d of %s", trainer.global_step, step_total(trainer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self._enabled and self.train_rate.due(self.every_s):
            self.log_training_step(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enabled:
            if trainer.global_step > self.train_rate.done_at_tick:
                self.log_training_step(trainer)
            log.info("fit: done in %s", duration(time.monotonic() - self.train_rate.started))

    def log_training_step(self, trainer: L.Trainer) -> None:
        step, total = trainer.global_step, step_total(trainer)
        per_second, left = self.train_rate.tick(step, total)
        metrics = trainer.callback_metrics
        shown = "".join(f", {name} {float(metrics[name]):.4g}" for name in self.shown if name in metrics)
        percent = f" ({100 * step / total:.0f}%)" if math.isfinite(total) else ""
        log.info("fit step %d/%s%s%s, %.2f steps/s, %s left", step, total, percent, shown, per_second,
                 duration(left))

    def _evaluation_batch(self, trainer: L.Trainer, stage: str, batch_idx: int, totals: list) -> None:
        total = totals[0] if len(totals) == 1 else sum(totals)
        where = f" at step {trainer.global_step}" if trainer.state.fn == "fit" else ""
        self.steps.begin(f"{stage}{where} batch {batch_idx + 1}/{total}")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_validation_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._evaluation_batch(trainer, "validate", batch_idx, trainer.num_val_batches)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_test_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._evaluation_batch(trainer, "test", batch_idx, trainer.num_test_batches)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)
        self._evaluation_batch(trainer, "predict", batch_idx, trainer.num_predict_batches)

    def show_reverse_step(self, done: int, total: int) -> None:
        if self._enabled:
            self.steps(done, total)


def progress_display(
    plain: bool | None = None, metrics_every_s: float = 1.0, log_every_s: float = 10.0, **rich_options
) -> LightningProgressBar:
    """`ProgressBar` on a terminal, `LogProgress` (a line every `log_every_s` seconds) when stdout is not
    one; `plain=true|false` forces the choice."""
    if plain is None:
        plain = not sys.stdout.isatty()
    if plain:
        return LogProgress(every_s=log_every_s)
    return ProgressBar(metrics_every_s=metrics_every_s, **rich_options)
