"""Checkpoints that survive preemption: atomic writes, a requeue on Slurm's warning signal taken at a batch
boundary, and a metrics history that stays one continuous series across resumes.

Lightning's own SLURM handler saves inside the signal handler, which may run between the parameter groups
of an optimiser step; `SlurmRequeue` only raises a flag there and saves at the next batch boundary, so a
resumed run is bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import RunningStage

from lit_diffsr.loggers import CSVLogger
from lit_diffsr.slurm.job import slurm_job_id

log = logging.getLogger("lit_diffsr")

HPC_CHECKPOINT = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


def hpc_checkpoints(folder: str | Path) -> list[Path]:
    """Lightning-style `hpc_ckpt_<n>.ckpt` files in `folder`, oldest (smallest n) first."""
    numbered = [(HPC_CHECKPOINT.fullmatch(path.name), path) for path in Path(folder).glob("hpc_ckpt_*.ckpt")]
    return [path for _, path in sorted((int(match.group(1)), path) for match, path in numbered if match)]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file in the same folder, fsyncs it, then `os.replace`s it onto
    the target: a process killed mid-save leaves the previous checkpoint intact. After an
    `hpc_ckpt_<n>.ckpt` is in place, the older hpc checkpoints beside it are deleted (the newest is kept)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path):  # remote filesystems: fsspec writes objects whole already
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)  # the permissions a plain open() would give, not mkstemp's 0600
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # make the rename itself durable
        finally:
            os.close(directory)
        if HPC_CHECKPOINT.fullmatch(path.name):
            for older in hpc_checkpoints(path.parent):
                if older != path:
                    older.unlink(missing_ok=True)


class SlurmRequeue(L.Callback):
    """On a Slurm job, `signal_name` (sent by `sbatch --signal=SIGUSR1@90`) requests a requeue; at the next
    training batch boundary every rank agrees, `hpc_ckpt_<n+1>.ckpt` is written to the run directory, the
    loggers are flushed and rank 0 runs `scontrol requeue <job id>`. Training goes on until Slurm ends the
    job (SIGTERM, then SIGKILL after KillWait): stopping here would make Lightning run an extra validation,
    an extra row in the history. The requeued job resumes from the newest checkpoint of its run directory
    and drops the rows logged after it. The signal is ignored outside `fit` (Lightning restores this
    handler after fit; it is then inert)."""

    def __init__(self, signal_name: str = "SIGUSR1"):
        self.signum = signal.Signals[signal_name]
        self.job_id: str | None = None
        self.requested = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested = self.job_id is not None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.job_id = slurm_job_id() if stage == "fit" else None
        self.requested = False
        if self.job_id is not None:
            # Installed before Lightning registers its own handler, which then stands aside.
            signal.signal(self.signum, self._on_signal)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.job_id, self.requested = None, False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self.job_id is None or not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        existing = hpc_checkpoints(trainer.default_root_dir)
        number = int(HPC_CHECKPOINT.fullmatch(existing[-1].name).group(1)) + 1 if existing else 1
        trainer.save_checkpoint(Path(trainer.default_root_dir) / f"hpc_ckpt_{number}.ckpt")
        for logger in trainer.loggers:
            logger.save()
        if trainer.is_global_zero:
            result = subprocess.run(["scontrol", "requeue", self.job_id], capture_output=True, text=True)
            log.info(
                "requeue of Slurm job %s at step %d: %s",
                self.job_id,
                trainer.global_step,
                "ok" if result.returncode == 0 else result.stderr.strip(),
            )
        self.requested = False


class SaveOnTerminate(L.Callback):
    """A fit ended by SIGTERM (`kill`, a scheduler's preemption or time limit, `scancel`) saves `last.ckpt`
    before it exits, so it resumes with `ckpt_path=last` instead of from the last periodic save (every 5000
    steps by default), and the resumed run is the same as an uninterrupted one.

    Lightning's own handler makes the loop stop at the next batch boundary, after the point where
    ModelCheckpoint and `SlurmRequeue` save; a save there would resume one learning-rate step off. So during
    training this handler only raises a flag; at the end of the training batch (every rank agreeing) the
    checkpoint is written where the others are, and then Lightning's handler is called, which stops the fit
    at that same boundary. A SIGTERM during validation goes to Lightning at once (no save: the run stops as
    before, from its last checkpoint)."""

    def __init__(self) -> None:
        self.requested = False
        self._lightning_handler: Any = None
        self._trainer: L.Trainer | None = None

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self._trainer.state.stage != RunningStage.TRAINING:  # validating: no batch end to wait for
            self._lightning_handler(signum, frame)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning registered its handler when the fit started; this one stands in front of it.
        self.requested, self._trainer = False, trainer
        handler = signal.getsignal(signal.SIGTERM)
        in_main_thread = threading.current_thread() is threading.main_thread()  # where handlers can be set
        if callable(handler) and in_main_thread and getattr(trainer.checkpoint_callback, "dirpath", None):
            self._lightning_handler = handler
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._lightning_handler is None:
            return
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        path = Path(trainer.checkpoint_callback.dirpath) / "last.ckpt"
        trainer.save_checkpoint(path)
        log.warning("SIGTERM at step %d: saved %s", trainer.global_step, path)
        self._lightning_handler(signal.SIGTERM, None)  # Lightning stops the fit at this batch's end

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        self._restore()

    def _restore(self) -> None:
        if self._lightning_handler is not None:
            signal.signal(signal.SIGTERM, self._lightning_handler)
            self._lightning_handler = None


class ContinuousHistory(L.Callback):
    """One continuous metrics history across resumes: the loggers are flushed whenever a checkpoint is
    written (a killed run loses no row before its checkpoint), and on resume the CSV rows logged after the
    checkpoint's step (which the resumed run logs again) are dropped."""

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None:
            return
        for logger in trainer.loggers:
            if isinstance(logger, CSVLogger):
                logger.drop_rows_from(trainer.global_step)
