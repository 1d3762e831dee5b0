"""Preemption-safe resume without Slurm: a run interrupted mid-epoch and resumed ends bit-identical to an
uninterrupted one, with one continuous metrics history; a checkpoint save killed with SIGKILL never
destroys the last good checkpoint."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

# 6 batches per epoch, validation (with sampling) every 3 steps, a checkpoint every 2: interrupting at step 4
# stops mid-epoch, between validations, and the resumed run crosses an epoch boundary and two validations.
COMMON = [
    "experiment=quickstart",
    "debug=smoke",
    "num_threads=1",
    "callbacks.progress=null",
    "trainer.deterministic=true",
    "data.demo_samples_per_epoch=12",
    "trainer.val_check_interval=3",
]


def fit_then_send_sigusr1(*overrides: str) -> subprocess.Popen:
    """`fit` in a subprocess that then signals itself SIGUSR1, as a late Slurm warning would."""
    code = textwrap.dedent(f"""
        import os, signal
        from lit_diffsr.cli import main
        main(["fit", *{list(overrides)!r}])
        os.kill(os.getpid(), signal.SIGUSR1)
        print("survived SIGUSR1 after fit")
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_interrupted_and_resumed_run_is_bit_identical_to_an_uninterrupted_one(cli, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    uninterrupted = fit_then_send_sigusr1(*COMMON, f"paths.output_dir={full}", "trainer.max_steps=10")
    cli("fit", *COMMON, f"paths.output_dir={part}", "trainer.max_steps=4")
    cli("fit", *COMMON, f"paths.output_dir={part}", "trainer.max_steps=10", "ckpt_path=auto")
    stdout, stderr = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, stderr[-4000:]
    assert "survived SIGUSR1 after fit" in stdout  # the signal's default action would have killed it

    expected = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    resumed = torch.load(part / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 10
    for key in ("state_dict", "current_model_state"):  # EMA weights and raw weights
        for name, value in expected[key].items():
            assert torch.equal(resumed[key][name], value), f"{key}.{name} differs"
    for name, value in expected["optimizer_states"][0]["state"][0].items():
        assert torch.equal(resumed["optimizer_states"][0]["state"][0][name], value), f"optimizer {name}"
    assert resumed["ImageDataModule"] == expected["ImageDataModule"]  # same sampler position
    # The resumed run appended to the history: row for row the uninterrupted run's, no gap, no repeat.
    assert (part / "metrics.csv").read_text() == (full / "metrics.csv").read_text()


def test_sigkill_during_checkpoint_saves_never_destroys_the_last_good_one(tmp_path):
    code = textwrap.dedent(f"""
        import torch
        from lit_diffsr.callbacks.checkpointing import AtomicCheckpointIO
        io, step = AtomicCheckpointIO(), 0
        weights = torch.randn(4_000_000)  # 16 MB: each save takes a while, so the kill lands inside one
        while True:
            step += 1
            io.save_checkpoint({{"step": step, "weights": weights}}, {str(tmp_path / "last.ckpt")!r})
    """)
    saver = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "last.ckpt").is_file():
            assert saver.poll() is None and time.monotonic() < deadline, "the saver never wrote a checkpoint"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait()
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["step"] >= 1 and checkpoint["weights"].shape == (4_000_000,)
