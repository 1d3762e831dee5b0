"""The run directory's rules, in one place: which checkpoint a command starts from, who may write into the
directory, and what a run leaves behind that the next one cleans.

`settle_run` applies the rules to one job, once: for a single run from the Hydra callback
`RunDirectoryPolicy`, before Hydra creates the directory or writes its record (.hydra/) there; for each job
of a sweep (whose directory exists only once the job starts) from `train.run`. The pieces:
- `resolve_ckpt_path`: `last`, `auto`, a path, or null (and a Slurm job's automatic resume);
- `refuse_to_mix_runs`: a fresh fit never writes into another run's directory;
- `RunLock`: one fit at a time per directory (an OS file lock, released when the process dies, so a
  killed run leaves nothing stuck);
- `remove_orphan_temporaries`: the partial `.*.tmp` files of a save that was killed mid-write;
- `check_run_name`: `name` is one path component, so a run stays under `paths.log_dir`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from lit_diffsr.callbacks.checkpointing import hpc_checkpoints
from lit_diffsr.errors import ConfigError, exit_on_user_error
from lit_diffsr.slurm.job import slurm_job_id

log = logging.getLogger("lit_diffsr")

LOCK_FILE = ".lit_diffsr.lock"
TRAINER_COMMANDS = ("fit", "validate", "test", "predict")


def newest_checkpoint(output_dir: Path) -> Path | None:
    """The most recently written of `<output_dir>/hpc_ckpt_*.ckpt` (Slurm requeue saves) and
    `<output_dir>/checkpoints/last.ckpt`, or None when the run has none yet."""
    candidates = [*hpc_checkpoints(output_dir), output_dir / "checkpoints" / "last.ckpt"]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime_ns, default=None)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path, command: str = "fit") -> str | None:
    """`last` means `<output_dir>/checkpoints/last.ckpt`; `auto` the newest checkpoint of the run if any
    (see `newest_checkpoint`), which is also what null means for `fit` on a Slurm job, so a requeued job
    resumes; any other value must be an existing file."""
    on_slurm_fit = command == "fit" and slurm_job_id() is not None
    if ckpt_path == "auto" or (ckpt_path in (None, "", "null") and on_slurm_fit):
        newest = newest_checkpoint(output_dir)
        if newest is not None:
            log.info("Resuming from %s", newest)
        return None if newest is None else str(newest)
    if ckpt_path in (None, "", "null"):
        return None
    path = output_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(ckpt_path)
    if not path.is_file():
        hint = " (ckpt_path=last looks in paths.output_dir/checkpoints: pass the run's paths.output_dir=DIR)"
        raise ConfigError(f"ckpt_path: no checkpoint at {path}{hint if ckpt_path == 'last' else ''}")
    return str(path)


def refuse_to_mix_runs(output_dir: Path) -> None:
    """A fresh fit into a directory that holds another run's checkpoints would interleave the two runs'
    checkpoints and metrics: stop before the run writes anything."""
    found = sorted(output_dir.glob("checkpoints/*.ckpt")) + hpc_checkpoints(output_dir)
    if found:
        raise ConfigError(
            f"paths.output_dir={output_dir} already holds a run ({len(found)} checkpoint(s), e.g. "
            f"{found[0].name}): resume it with ckpt_path=last, or start afresh with another paths.output_dir"
        )


def check_run_name(name: str) -> None:
    """Runs live in `paths.log_dir/<name>/`: a name with a path separator or `..` would put one elsewhere."""
    if not name or "/" in name or os.sep in name or name in (".", ".."):
        raise ConfigError(
            f"name={name!r} must be a plain folder name (no '/' or '..'): it names the run's folder under "
            "paths.log_dir; to write elsewhere, set paths.output_dir=DIR"
        )


def settle_run(command: str, name: str, output_dir: Path, ckpt_path: str | None) -> str | None:
    """The rules for one job of `command`: `name` keeps the run under paths.log_dir, the checkpoint it
    starts from (`resolve_ckpt_path`), and a fresh fit never joins another run (`refuse_to_mix_runs`).
    Returns the checkpoint (an existing file) or None."""
    check_run_name(name)
    resolved = resolve_ckpt_path(ckpt_path, Path(output_dir), command)
    if command == "fit" and resolved is None:
        refuse_to_mix_runs(Path(output_dir))
    return resolved


class RunDirectoryPolicy(Callback):
    """Settles a trainer command (fit, validate, test, predict) before Hydra creates its run directory and
    writes its record there, from the composed config (experiment files and interpolations included): a
    refused run leaves the directory as it was. The checkpoint it settles on replaces `ckpt_path`, so the
    job and its records name the file actually loaded. A sweep's name is checked before its directory is
    made; each sweep job is settled by the job itself (`train.run`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("command") not in TRAINER_COMMANDS:
            return
        with exit_on_user_error(), read_write(config):
            config.ckpt_path = settle_run(
                config.command, config.name, Path(config.paths.output_dir), config.ckpt_path
            )

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("command") in TRAINER_COMMANDS:
            with exit_on_user_error():
                check_run_name(config.name)


class RunLock:
    """An exclusive lock on `<output_dir>/.lit_diffsr.lock`, held for the life of a fit.

    `flock` is released by the kernel when the process ends, however it ends (kill -9 included), so a
    stale lock cannot block the next run. The file records who holds it, for the refusal message. On
    cluster file systems it needs flock support (NFSv4, Lustre mounted with `flock`)."""

    def __init__(self, output_dir: Path):
        self.path = Path(output_dir) / LOCK_FILE
        self._file = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 -- held open until __exit__
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(
                f"paths.output_dir={self.path.parent} is in use by another fit ({holder}): wait for it to "
                "finish, or give this one another paths.output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {started}")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None


def remove_orphan_temporaries(output_dir: Path) -> list[Path]:
    """Delete the `.<name>.<random>.tmp` files that a save killed mid-write leaves (each a partial
    checkpoint; `AtomicCheckpointIO` writes them). Call it only while holding the run's `RunLock`: a
    running fit's save in progress looks the same."""
    orphans = [
        path
        for folder in (output_dir, output_dir / "checkpoints")
        for path in folder.glob(".*.tmp")
        if path.is_file()
    ]
    for path in orphans:
        path.unlink(missing_ok=True)
    if orphans:
        log.info("Removed %d partial checkpoint file(s) left by an interrupted save", len(orphans))
    return orphans
