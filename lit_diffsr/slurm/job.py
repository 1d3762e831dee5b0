"""Who we are on Slurm: the job id that names a run's directory and its W&B run, so a requeued job finds
its own checkpoints. Registered as OmegaConf resolvers (used in conf/paths, conf/hydra, conf/logger)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from omegaconf import OmegaConf

# Lightning's rule (SLURMEnvironment): an allocation named like this is an interactive shell, not a job.
INTERACTIVE_JOB_NAMES = ("bash", "interactive")


def slurm_job_id(environ: Mapping[str, str] = os.environ) -> str | None:
    """`ARRAYJOB_TASK` for a task of a job array, `JOBID` for a batch job, None off-cluster or interactive."""
    if "SLURM_JOB_ID" not in environ or environ.get("SLURM_JOB_NAME") in INTERACTIVE_JOB_NAMES:
        return None
    if "SLURM_ARRAY_JOB_ID" in environ and "SLURM_ARRAY_TASK_ID" in environ:
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ["SLURM_JOB_ID"]


def slurm_run_name(off_cluster: str | None) -> str | None:
    """`slurm-<job id>` on a Slurm job (the same across requeues), else `off_cluster` (e.g. a timestamp)."""
    job_id = slurm_job_id()
    return off_cluster if job_id is None else f"slurm-{job_id}"


def wandb_run_id(output_dir: str, command: str = "fit") -> str:
    """W&B run id, stable across restarts of the same run: a digest of its run directory and command, so
    `fit ... ckpt_path=last` (or a requeued Slurm job, whose directory is fixed by its job id) continues the
    same W&B run, while `test` in that directory gets a run of its own. Prefixed by the job id on Slurm."""
    digest = hashlib.sha1(f"{os.path.abspath(output_dir)}|{command}".encode()).hexdigest()[:12]
    job_id = slurm_job_id()
    return f"{command}-{digest}" if job_id is None else f"slurm-{job_id}-{command}-{digest}"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("lit_diffsr.slurm_run_name", slurm_run_name, replace=True)
    OmegaConf.register_new_resolver("lit_diffsr.wandb_run_id", wandb_run_id, replace=True)
