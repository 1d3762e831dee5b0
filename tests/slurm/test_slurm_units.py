"""Slurm plumbing without Slurm: job identity, the launcher (rendering, grid), requeue, checkpoint IO."""

import csv
import os
import signal
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from lit_diffsr.callbacks.checkpointing import AtomicCheckpointIO, SlurmRequeue, hpc_checkpoints
from lit_diffsr.data.samplers import SeededSampler
from lit_diffsr.loggers import CSVLogger
from lit_diffsr.run_dir import newest_checkpoint, resolve_ckpt_path
from lit_diffsr.slurm import expand_grid, slurm_job_id, slurm_run_name, wandb_run_id
from lit_diffsr.slurm import main as slurm_main
from lit_diffsr.slurm.job import register_resolvers

ARRAY_TASK = {
    "SLURM_JOB_ID": "7",
    "SLURM_JOB_NAME": "train",
    "SLURM_ARRAY_JOB_ID": "5",
    "SLURM_ARRAY_TASK_ID": "2",
}


def test_job_id_names_array_tasks_and_ignores_interactive_shells():
    assert slurm_job_id(ARRAY_TASK) == "5_2"
    assert slurm_job_id({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "train"}) == "7"
    assert slurm_job_id({"SLURM_JOB_ID": "7", "SLURM_JOB_NAME": "interactive"}) is None
    assert slurm_job_id({}) is None


def test_run_directory_and_wandb_id_are_fixed_per_job(monkeypatch, tmp_path):
    register_resolvers()
    config = OmegaConf.create(
        {"dir": "${lit_diffsr.slurm_run_name:stamp}", "id": "${lit_diffsr.wandb_run_id:/r}"}
    )
    for name in [key for key in os.environ if key.startswith("SLURM_")]:
        monkeypatch.delenv(name)
    # Off-cluster: the timestamp; the W&B id still follows the run directory and command, so a resumed fit
    # continues its W&B run and a `test` in the same directory gets its own.
    assert config.dir == "stamp" and config.id == wandb_run_id("/r") and config.id.startswith("fit-")
    assert wandb_run_id("/r", "test") != config.id
    for name, value in ARRAY_TASK.items():
        monkeypatch.setenv(name, value)
    config = OmegaConf.create(
        {"dir": "${lit_diffsr.slurm_run_name:stamp}", "id": "${lit_diffsr.wandb_run_id:/r}"}
    )
    assert config.dir == slurm_run_name("other") == "slurm-5_2"
    assert config.id == wandb_run_id("/r") and config.id.startswith("slurm-5_2-")
    assert wandb_run_id("/other") != config.id  # sub-runs of one multirun job get their own W&B runs


def test_sweep_grid_is_the_cartesian_product_of_sweep_overrides():
    fixed, tasks = expand_grid(["experiment=quickstart", "seed=0,1", "model.optim.lr=0.1,0.2,0.3"])
    assert fixed == ["experiment=quickstart"]
    assert (
        len(tasks) == 6
        and tasks[0] == ["seed=0", "model.optim.lr=0.1"]
        and tasks[-1][1] == "model.optim.lr=0.3"
    )
    assert expand_grid(["seed=range(0,3)"])[1] == [["seed=0"], ["seed=1"], ["seed=2"]]


def run_launcher(*args):
    return subprocess.run(
        [sys.executable, "-m", "lit_diffsr", "slurm", *args], capture_output=True, text=True
    )


def test_dry_run_renders_multi_node_ddp_and_array_scripts():
    result = run_launcher(
        "submit",
        "--dry-run",
        "--nodes",
        "2",
        "--gpus-per-node",
        "4",
        "--partition",
        "gpu",
        "--account",
        "proj",
        "--mem",
        "64G",
        "--time",
        "02:00:00",
        "experiment=quickstart",
    )
    script = result.stdout
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=proj",
        "#SBATCH --mem=64G",
        "#SBATCH --time=02:00:00",
        "#SBATCH --signal=SIGUSR1@90",
        "#SBATCH --requeue",
        "trainer.num_nodes=2 trainer.devices=4",
    ):
        assert line in script, line
    assert "srun " in script and "experiment=quickstart" in script
    sweep = run_launcher(
        "sweep", "--dry-run", "--max-parallel", "2", "experiment=quickstart", "seed=0,1,2"
    ).stdout
    assert "#SBATCH --array=0-2%2" in sweep and "SLURM_ARRAY_TASK_ID + 1" in sweep
    assert "# seed=2" in sweep


def test_launcher_names_a_bad_override():
    result = run_launcher("sweep", "--dry-run", "seed=[0,")
    assert result.returncode == 2 and "seed=[0," in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment=quickstrat"], "error: experiment=quickstrat does not compose: Could not find "
         "'experiment/quickstrat'; available: autoencoder_kl_f4, "),
        (["experiment=cdm_base_32", "trainer=dpp", "--gpus-per-node", "4"], "error: experiment=cdm_base_32 "
         "trainer=dpp does not compose: Could not find 'trainer/dpp'; available: cpu, ddp, default, gpu"),
        (["experiment=quickstart", "model.optim.lrr=1"], "error: experiment=quickstart model.optim.lrr=1 "
         "does not compose: Could not override 'model.optim.lrr'. To append"),
        (["experiment=cdm_base_32"], "error: cdm_base_32 trains on GPU (trainer.accelerator=gpu) but the job "
         "asks for no GPU: add --gpus-per-node N, or trainer=cpu"),
        (["experiment=quickstart", "seed=0,1", "trainer=gpu,cpu"], "error: quickstart trains on GPU"),
        (["--sbatch", "mail-type=END\nrm -rf x", "experiment=quickstart"], "error: --sbatch: no line breaks"),
    ],
)  # fmt: skip
def test_dry_run_refuses_jobs_that_would_fail_after_the_queue(overrides, message, capsys):
    """The config is composed before rendering: one line, exit status 2, nothing printed to submit."""
    action = "sweep" if any("," in override for override in overrides) else "submit"
    with pytest.raises(SystemExit) as exited:
        slurm_main([action, "--dry-run", *overrides])
    captured = capsys.readouterr()
    assert exited.value.code == 2 and captured.out == ""
    assert captured.err.startswith(message) and captured.err.count("\n") == 1, captured.err


def test_typo_fails_at_submit_time_through_the_command_line():
    result = run_launcher("submit", "--dry-run", "experiment=cdm_base_32", "trainer=dpp")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().endswith("Could not find 'trainer/dpp'; available: cpu, ddp, default, gpu")


def test_cpu_trainer_on_gpu_nodes_gets_the_gpu_accelerator_and_jobs_are_named_by_experiment(capsys):
    slurm_main(
        ["submit", "--dry-run", "--gpus-per-node", "2", "--qos", "high", "--constraint", "a100|h100"]
        + ["--sbatch", "mail-type=END", "--sbatch=--exclusive", "experiment=quickstart"]
    )
    captured = capsys.readouterr()
    assert captured.err.startswith("note: quickstart trains on CPU (trainer.accelerator=cpu)")
    for line in (
        "#SBATCH --job-name=quickstart",
        "#SBATCH --qos=high",
        "#SBATCH --constraint=a100|h100",
        "#SBATCH --mail-type=END",
        "#SBATCH --exclusive",
        "fit experiment=quickstart trainer.accelerator=gpu trainer.num_nodes=1 trainer.devices=2",
    ):
        assert line in captured.out.splitlines() or line in captured.out, line
    # A sweep whose tasks differ gets the fix in the tasks that need it; a given --job-name stays.
    slurm_main(["sweep", "--dry-run", "--gpus-per-node", "1", "--job-name", "mine", "experiment=quickstart"]
               + ["trainer=cpu,gpu"])  # fmt: skip
    sweep = capsys.readouterr().out
    assert "#SBATCH --job-name=mine" in sweep
    assert "# trainer=cpu trainer.accelerator=gpu\n# trainer=gpu\n" in sweep


def test_atomic_save_keeps_the_last_good_checkpoint_when_a_save_dies(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())

    def dies_half_way(obj, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a kill would, mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "temporary file left behind"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_only_the_newest_hpc_checkpoint_is_kept_and_resume_picks_the_newest(tmp_path):
    io = AtomicCheckpointIO()
    (tmp_path / "checkpoints").mkdir()
    io.save_checkpoint({"step": 1}, tmp_path / "hpc_ckpt_1.ckpt")
    io.save_checkpoint({"step": 2}, tmp_path / "checkpoints" / "last.ckpt")
    assert newest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 3}, tmp_path / "hpc_ckpt_2.ckpt")
    assert hpc_checkpoints(tmp_path) == [tmp_path / "hpc_ckpt_2.ckpt"]
    assert resolve_ckpt_path("auto", tmp_path) == str(tmp_path / "hpc_ckpt_2.ckpt")
    assert resolve_ckpt_path("auto", tmp_path / "empty") is None  # a fresh run starts from scratch
    assert resolve_ckpt_path(None, tmp_path) is None  # off-cluster, null stays null


def test_null_ckpt_path_resumes_on_a_slurm_job(tmp_path, monkeypatch):
    for name, value in ARRAY_TASK.items():
        monkeypatch.setenv(name, value)
    AtomicCheckpointIO().save_checkpoint({}, tmp_path / "hpc_ckpt_4.ckpt")
    assert resolve_ckpt_path(None, tmp_path, "fit") == str(tmp_path / "hpc_ckpt_4.ckpt")
    assert resolve_ckpt_path(None, tmp_path, "predict") is None


class FakeTrainer:
    """What SlurmRequeue uses of a Trainer."""

    def __init__(self, root):
        self.default_root_dir, self.is_global_zero, self.loggers, self.global_step = str(root), True, [], 3
        self.strategy = type("Strategy", (), {"reduce_boolean_decision": staticmethod(lambda d, all: d)})()
        self.saved = []

    def save_checkpoint(self, path):
        AtomicCheckpointIO().save_checkpoint({"step": self.global_step}, path)
        self.saved.append(path.name)


def test_requeue_signal_saves_at_the_batch_boundary_then_requeues(tmp_path, monkeypatch):
    for name, value in ARRAY_TASK.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(
        subprocess,
        "run",
        lambda command, **_: calls.append(command) or subprocess.CompletedProcess(command, 0, "", ""),
    )
    trainer, callback = FakeTrainer(tmp_path), SlurmRequeue()
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        callback.setup(trainer, None, "fit")
        callback.on_train_batch_end(trainer, None)
        assert trainer.saved == [] and calls == []  # no signal, nothing to do
        os.kill(os.getpid(), signal.SIGUSR1)  # only a flag is set inside the handler
        assert trainer.saved == []
        callback.on_train_batch_end(trainer, None)
        callback.on_train_batch_end(trainer, None)  # handled once
        assert trainer.saved == ["hpc_ckpt_1.ckpt"] and calls == [["scontrol", "requeue", "5_2"]]
        callback.teardown(trainer, None, "fit")
        os.kill(os.getpid(), signal.SIGUSR1)  # after fit: ignored
        callback.on_train_batch_end(trainer, None)
        assert trainer.saved == ["hpc_ckpt_1.ckpt"]
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_csv_history_drops_rows_from_the_resumed_step(tmp_path):
    logger = CSVLogger(tmp_path, name="", version="")
    for step in range(5):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.save()
    assert logger.drop_rows_from(3) == 2
    resumed = CSVLogger(tmp_path, name="", version="")  # appends, as a resumed run does
    resumed.log_metrics({"loss": 30.0}, step=3)
    resumed.save()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(row["step"], row["loss"]) for row in rows] == [
        ("0", "0.0"),
        ("1", "1.0"),
        ("2", "2.0"),
        ("3", "30.0"),
    ]


def test_sampler_skips_consumed_items_and_shards_like_distributed_sampler():
    full = list(SeededSampler(10, seed=3))
    resumed = SeededSampler(10, seed=3)
    resumed.load_state_dict({"seed": 3, "epoch": 0, "consumed": 4})
    assert list(resumed) == full[4:] and len(resumed) == 10  # len stays the epoch's (Lightning counts on)
    resumed.set_epoch(1)
    assert resumed.consumed == 0  # a new epoch starts at its first item
    shards = [list(SeededSampler(10, seed=3, num_replicas=3, rank=rank)) for rank in range(3)]
    assert [len(shard) for shard in shards] == [4, 4, 4]
    assert set(pair for shard in shards for pair in shard) == set(full)  # every item, 2 padded repeats
    later = [SeededSampler(10, seed=3, num_replicas=3, rank=rank) for rank in range(3)]
    for sampler in later:
        sampler.load_state_dict({"seed": 3, "epoch": 0, "consumed": 6})
    assert [list(s) for s in later] == [shard[2:] for shard in shards]  # each rank continues its own shard
    with pytest.raises(ValueError, match="rank=3"):
        SeededSampler(10, rank=3, num_replicas=3)
