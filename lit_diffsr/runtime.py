"""Process-wide settings of a command (CPU threads) and the record each command keeps of itself."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lit_diffsr.errors import ConfigError, exit_on_user_error

# Commands that own their directory keep Hydra's record there (.hydra/config.yaml, overrides.yaml).
OWNS_ITS_DIRECTORY = {"fit", "sample"}


# Lightning messages that say nothing about this run (matched at the start of the message).
LIGHTNING_NOISE = (
    # On any host with Slurm's tools, for every command not started by srun (a login node, a test).
    "The `srun` command is available on your system but is not used",
    # Every mid-epoch resume: the DataModule resumes its sampler exactly (data/datamodule.py state_dict),
    # which Lightning cannot see; the DataModule logs the position it resumes from instead.
    "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is",
    # Lightning's own use of a torch API that torch deprecated; nothing a user can change.
    "`isinstance(treespec, LeafSpec)` is deprecated",
    # Every resume (a fresh fit into a directory with checkpoints is refused: run_dir.refuse_to_mix_runs).
    "Checkpoint directory ",
)
# Lightning's info lines advertising its cloud products, and the one saying it uses our model summary.
LIGHTNING_CHATTER = ("💡 Tip:", "Trainer already configured with model summary callbacks")


class DropMessages(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def silence_lightning_noise() -> None:
    """Hide the `LIGHTNING_NOISE` warnings and the `LIGHTNING_CHATTER` info lines."""
    for message in LIGHTNING_NOISE:
        warnings.filterwarnings("ignore", message=re.escape(message))
    rank_zero_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropMessages) for f in rank_zero_logger.filters):
        rank_zero_logger.addFilter(DropMessages(LIGHTNING_CHATTER))


def available_cpus() -> int:
    """The CPUs this process may run on: a Slurm allocation or `taskset` mask, not the whole machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity masks
        return os.cpu_count() or 1


def set_num_threads(setting: int | str | None) -> None:
    """`num_threads=auto`: torch's default (one thread per physical core) capped at `available_cpus()`,
    so a job limited to a few cores of a large machine does not oversubscribe them; an integer sets it;
    null leaves torch's default."""
    if setting in (None, "", "null"):
        return
    if setting == "auto":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), available_cpus())))
        return
    try:
        count = int(setting)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"num_threads={setting!r}: give a positive integer, auto or null (torch's default)")
    torch.set_num_threads(count)


def hydra_record_subdir(command: str, mode) -> str | None:
    """Where Hydra writes its record of a command, relative to the run directory (`hydra.output_subdir`).
    `.hydra` for a command that owns its directory (fit, sample) and for every job of a sweep (each has
    its own); None (no record from Hydra) for validate / test / predict in a fit's directory, which keep
    theirs beside their outputs instead (`write_record`), so the fit's record stays as the fit wrote it."""
    multirun = getattr(mode, "name", str(mode)).endswith("MULTIRUN")
    return ".hydra" if command in OWNS_ITS_DIRECTORY or multirun else None


def sweep_job_dirname(number, overrides: str, max_length: int = 100) -> str:
    """A sweep job's folder: `<number>_<its overrides>` (Hydra's override_dirname, e.g.
    `1_model.optim.lr=0.0003`), with path separators replaced and cut to `max_length` characters; the
    number alone keeps it unique."""
    name = f"{number}_{overrides}" if overrides else str(number)
    return name.replace("/", "_").replace("\\", "_")[:max_length]


# Set once Hydra has composed a command's config and calls its job: an exit before that is Hydra's own report
# of a composition error (a typo in an override, an unknown experiment), see `cli.run_hydra`.
_hydra_job_started = False


def hydra_job_started() -> bool:
    return _hydra_job_started


def hydra_job(job: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """The body of a command's Hydra entry: `job(cfg)`, where a user error ends the command with one line and
    exit status 2 (`errors.exit_on_user_error`)."""
    global _hydra_job_started
    _hydra_job_started = True
    with exit_on_user_error():
        return job(cfg)


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("lit_diffsr.hydra_record_subdir", hydra_record_subdir, replace=True)
    OmegaConf.register_new_resolver("lit_diffsr.sweep_job_dirname", sweep_job_dirname, replace=True)


def command_directory(output_dir: Path, command: str) -> Path | None:
    """The folder of a validate / test / predict run inside a fit's run directory: `samples/<command>`,
    then `samples/<command>-2`, ... (never an existing one); None for commands that own the run directory.
    Rank 0 claims it; the other ranks of a DDP job take rank 0's choice (broadcast by the callbacks)."""
    if command in OWNS_ITS_DIRECTORY:
        return None
    path = output_dir / "samples" / command
    return claim_directory(path) if rank_zero_only.rank == 0 else path


def claim_directory(path: Path) -> Path:
    """`path`, else `path-2`, `path-3`, ...: the first that does not exist yet, created here. `mkdir` either
    creates a directory or fails, so two commands started at the same moment never share one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.name}-{number}")


@rank_zero_only
def write_record(folder: Path, cfg: DictConfig, overrides: list[str], ckpt_path: str | None) -> None:
    """`<folder>/config.yaml` (the composed config, resolved, with the checkpoint actually loaded) and
    `<folder>/overrides.yaml` (the command line), as Hydra's .hydra/ holds them for a fit."""
    folder.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["ckpt_path"] = ckpt_path
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "overrides.yaml").write_text(yaml.safe_dump(list(overrides), sort_keys=False))


def configured_data_dir() -> Path:
    """`paths.data_dir` as a command resolves it ($LIT_DIFFSR_DATA, else <$LIT_DIFFSR_ROOT or .>/datasets),
    for scripts that run outside Hydra (benchmarks)."""
    paths = OmegaConf.load(Path(__file__).parent / "conf" / "paths" / "default.yaml")
    return Path(OmegaConf.create({"paths": paths}).paths.data_dir)
