"""Through the real templates and launcher on a real (single-node) Slurm: an array sweep, a job requeued
twice by its preemption warning that ends bit-identical to an uninterrupted run, and two-process DDP."""

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.xdist_group("slurm")]

REPO = Path(__file__).resolve().parents[2]
# A tiny model, deterministic; a checkpoint (and a flushed metrics.csv) every 2 steps.
SMALL = [
    "experiment=quickstart",
    "debug=smoke",
    "num_threads=1",
    "callbacks.progress=null",
    "trainer.deterministic=true",
    "data.demo_samples_per_epoch=12",
    "trainer.val_check_interval=10",
]


def launch(env: dict, log_dir: Path, action: str, *args: str) -> str:
    """`python -m lit_diffsr slurm ACTION ...`; returns the job id sbatch gave."""
    command = [
        sys.executable,
        "-m",
        "lit_diffsr",
        "slurm",
        action,
        "--log-dir",
        str(log_dir),
        "--time",
        "00:10:00",
        "--cpus-per-task",
        "1",
        "--workdir",
        str(REPO),
        *args,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return re.search(r"submitted job (\d+)", result.stdout).group(1)


def wait_until(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
    return value


def show_job(env: dict, job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True).stdout


def job_states(env: dict, job_id: str) -> list[str]:
    return re.findall(r"JobState=(\w+)", show_job(env, job_id))


def wait_for_end(env: dict, job_id: str, log_dir: Path, timeout: float = 150) -> None:
    finished = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
    states = wait_until(
        lambda: (s := job_states(env, job_id)) and all(x in finished for x in s) and s,
        timeout,
        f"job {job_id} to end",
    )
    logs = "\n".join(path.read_text()[-3000:] for path in log_dir.glob(f"*{job_id}*.out"))
    assert set(states) == {"COMPLETED"}, f"job {job_id}: {states}\n{logs}"


def last_step(run: Path) -> int:
    """The newest step in the run's flushed metrics.csv (-1 when nothing is flushed yet)."""
    try:
        return max(int(row["step"]) for row in csv.DictReader(open(run / "metrics.csv")))
    except (FileNotFoundError, ValueError, KeyError):
        return -1


def test_array_sweep_runs_each_task_in_its_own_run_directory(slurm_env, tmp_path):
    runs = tmp_path / "runs"
    job = launch(
        slurm_env,
        tmp_path / "logs",
        "sweep",
        *SMALL,
        "trainer.max_steps=2",
        f"paths.log_dir={runs}",
        "seed=1,2",
    )
    wait_for_end(slurm_env, job, tmp_path / "logs")
    for task, seed in ((0, 1), (1, 2)):
        run = runs / "quickstart" / f"slurm-{job}_{task}"
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert last_step(run) == 1
        assert f"seed: {seed}" in (run / ".hydra" / "config.yaml").read_text()


def test_requeued_twice_resumes_and_matches_the_uninterrupted_run(slurm_env, tmp_path):
    steps = ["trainer.max_steps=30", f"paths.log_dir={tmp_path / 'runs'}"]
    job = launch(slurm_env, tmp_path / "logs", "submit", *SMALL, *steps)
    reference = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lit_diffsr",
            "fit",
            *SMALL,
            *steps,
            f"paths.output_dir={tmp_path / 'reference'}",
        ],
        cwd=REPO,
        env={k: v for k, v in slurm_env.items() if not k.startswith("SLURM")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = tmp_path / "runs" / "quickstart" / f"slurm-{job}"
    output = tmp_path / "logs" / f"quickstart-{job}.out"
    requeue_to_resume = []
    for requeue in (1, 2):
        progress = max(last_step(run), 0) + 2
        wait_until(
            lambda progress=progress: last_step(run) >= progress,
            120,
            f"training progress before requeue {requeue}",
        )
        subprocess.run(["scancel", "--signal=USR1", job], env=slurm_env, check=True)
        sent = time.monotonic()
        wait_until(lambda n=requeue: (run / f"hpc_ckpt_{n}.ckpt").is_file(), 60, f"hpc_ckpt_{requeue}.ckpt")
        wait_until(
            lambda n=requeue: (
                f"Restarts={n} " in show_job(slurm_env, job)
                and "JobState=RUNNING" in show_job(slurm_env, job)
            ),
            120,
            f"the job to run again after requeue {requeue}",
        )
        running = time.monotonic()
        wait_until(lambda n=requeue: output.read_text().count("Resuming from") == n, 120, f"resume {requeue}")
        requeue_to_resume.append((running - sent, time.monotonic() - running))
    wait_for_end(slurm_env, job, tmp_path / "logs")
    assert reference.wait(timeout=120) == 0, reference.stderr.read()[-3000:]
    for slurm_part, python_part in requeue_to_resume:  # measured, not asserted (timings depend on load)
        print(
            f"\nrequeue to resume: {slurm_part:.1f} s signal -> running again, {python_part:.1f} s -> resumed"
        )

    assert "Restarts=2 " in show_job(slurm_env, job)
    assert sorted(p.name for p in run.glob("hpc_ckpt_*.ckpt")) == ["hpc_ckpt_2.ckpt"], (
        "older hpc checkpoints kept"
    )
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    expected = torch.load(
        tmp_path / "reference" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True
    )
    assert resumed["global_step"] == expected["global_step"] == 30
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), f"{key} differs from the uninterrupted run"
    # One continuous history, row for row the uninterrupted run's.
    assert (run / "metrics.csv").read_text() == (tmp_path / "reference" / "metrics.csv").read_text()


def test_two_process_ddp_under_srun(slurm_env, tmp_path):
    job = launch(
        slurm_env,
        tmp_path / "logs",
        "submit",
        "--tasks-per-node",
        "2",
        *SMALL,
        "trainer.max_steps=2",
        "trainer.accelerator=cpu",
        "trainer.strategy=ddp",
        f"paths.log_dir={tmp_path / 'runs'}",
    )
    wait_for_end(slurm_env, job, tmp_path / "logs")
    run = tmp_path / "runs" / "quickstart" / f"slurm-{job}"
    assert (
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
        == 2
    )
    assert "MEMBER: 2/2" in (tmp_path / "logs" / f"quickstart-{job}.out").read_text()  # named by experiment
