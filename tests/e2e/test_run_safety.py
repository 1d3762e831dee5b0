"""Nothing a user trained is lost or overwritten silently, through the real CLI: a diverged run keeps its
last good checkpoint, a copied run resumes into its own newest last.ckpt, a second fit into a running
directory is refused (and a killed fit leaves no stale lock), partial checkpoint files of a killed save are
cleaned, and changed optimiser settings on resume are applied and reported."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.e2e.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e

TINY_FIT = ["fit", "experiment=quickstart", "debug=smoke", "num_threads=1", "callbacks.progress=null",
            "callbacks.checkpoint.every_n_train_steps=1", "trainer.val_check_interval=null",
            "trainer.limit_val_batches=0"]


def last_step(run) -> int:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def test_a_diverged_fit_stops_and_keeps_finite_weights(cli, tmp_path):
    result = cli(*TINY_FIT, "trainer.max_steps=12", "model.optim.lr=1e6", "model.optim.warmup_steps=0",
                 "trainer.log_every_n_steps=4", f"paths.output_dir={tmp_path}", check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")][-1]
    assert "training diverged: non-finite loss or gradient at step" in error and "model.optim.lr" in error
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values() if v.is_floating_point())
    failed_at = int(error.split("at step ")[1].split(";")[0])
    assert checkpoint["global_step"] == failed_at - 1  # the last step before it, not a later one


def test_a_copied_run_resumes_into_its_own_last_checkpoint(cli, tmp_path):
    original, copy = tmp_path / "run", tmp_path / "copy"
    cli(*TINY_FIT, "trainer.max_steps=2", f"paths.output_dir={original}")
    shutil.copytree(original, copy)
    cli(*TINY_FIT, "trainer.max_steps=4", "ckpt_path=last", f"paths.output_dir={copy}")
    assert last_step(copy) == 4 and not list(copy.glob("checkpoints/last-v*.ckpt"))
    cli(*TINY_FIT, "trainer.max_steps=5", "ckpt_path=last", f"paths.output_dir={copy}")
    assert last_step(copy) == 5 and last_step(original) == 2


def test_a_second_fit_into_a_running_directory_is_refused_and_a_killed_one_leaves_no_lock(cli, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lit_diffsr.run_dir import RunLock\n"
         f"with RunLock({str(tmp_path)!r}):\n    print('locked', flush=True)\n    time.sleep(600)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = cli(*TINY_FIT, "ckpt_path=auto", f"paths.output_dir={tmp_path}", check=False)
        assert result.returncode == 2 and "Traceback" not in result.stderr.split("error: ")[-1]
        assert f"in use by another fit (pid {holder.pid} on" in result.stderr
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    cli(*TINY_FIT, "ckpt_path=auto", f"paths.output_dir={tmp_path}")  # the kernel released the lock
    assert last_step(tmp_path) == 1


def test_partial_files_of_a_killed_save_are_removed_at_the_next_start(cli, tmp_path):
    cli(*TINY_FIT, f"paths.output_dir={tmp_path}")
    orphans = [tmp_path / "checkpoints" / ".last.ckpt.k1ll3d.tmp", tmp_path / ".hpc_ckpt_2.ckpt.x7.tmp"]
    for orphan in orphans:
        orphan.write_bytes(b"\0" * 4096)
    time.sleep(0.01)
    cli(*TINY_FIT, "trainer.max_steps=2", "ckpt_path=last", f"paths.output_dir={tmp_path}")
    assert not any(orphan.exists() for orphan in orphans) and last_step(tmp_path) == 2


def test_a_changed_learning_rate_on_resume_is_applied_and_reported(cli, tmp_path):
    common = [*TINY_FIT, "model.optim.warmup_steps=0", f"paths.output_dir={tmp_path}"]
    cli(*common, "trainer.max_steps=2", "model.optim.lr=1e-3")
    result = cli(*common, "trainer.max_steps=3", "model.optim.lr=2e-3", "ckpt_path=last")
    assert "model.optim.lr: 0.001 -> 0.002" in result.stdout + result.stderr
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert [group["lr"] for group in state["optimizer_states"][0]["param_groups"]] == [2e-3, 2e-3]
    assert state["lr_schedulers"][0]["base_lrs"] == [2e-3, 2e-3]


def test_opt_in_loss_spike_detection_stops_with_one_line(cli, tmp_path):
    spike = ["+callbacks.spike._target_=lightning.pytorch.callbacks.SpikeDetection",
             "+callbacks.spike.warmup=1", "+callbacks.spike.rtol=1e-6"]  # any rise above the running mean
    result = cli(*TINY_FIT, "trainer.max_steps=20", *spike, f"paths.output_dir={tmp_path}", check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: Training spike detected in batch" in result.stderr and "callbacks.spike" in result.stderr
    assert (tmp_path / "skip_batches.json").is_file()


def test_a_fit_ended_by_sigterm_saves_its_step_and_exits_143(tmp_path):
    """A `kill` (or a scheduler's preemption) mid-run: last.ckpt holds the step it reached, though no
    periodic save was due, the exit status says the run did not finish, and ckpt_path=last goes on."""
    args = [*TINY_FIT, "trainer.max_steps=100000", "callbacks.checkpoint.every_n_train_steps=100000",
            "callbacks.progress={_target_:lit_diffsr.callbacks.progress.LogProgress,every_s:0}",
            f"paths.output_dir={tmp_path}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    run = subprocess.Popen([sys.executable, "-m", "lit_diffsr", *args], cwd=REPO, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        seen = []
        for line in run.stdout:  # wait until a few steps have run
            seen.append(line)
            if "fit step 3/" in line:
                break
        run.send_signal(signal.SIGTERM)
        output = "".join(seen) + run.stdout.read()
        assert run.wait(timeout=120) == 128 + signal.SIGTERM, output[-3000:]
    finally:
        run.kill()
    reached = last_step(tmp_path)
    assert reached >= 3 and "resume with ckpt_path=last" in output
    run_cli(*TINY_FIT, f"trainer.max_steps={reached + 1}", "ckpt_path=last", f"paths.output_dir={tmp_path}")
    assert last_step(tmp_path) == reached + 1
