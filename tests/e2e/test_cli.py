"""End-to-end runs through the real CLI, in subprocesses, as a user would run them."""

import csv

import pytest
import torch
import yaml

from lit_diffsr.cli import available_experiments

pytestmark = pytest.mark.e2e

SMALL = ["debug=smoke", "num_threads=1"]


def test_help_lists_commands_and_experiments(cli):
    out = cli("--help").stdout
    for word in ("fit", "validate", "test", "predict", "quickstart", "cdm_base_32"):
        assert word in out


def test_unknown_experiment_lists_the_available_ones(cli, tmp_path):
    result = cli("fit", "experiment=no_such_thing", f"paths.output_dir={tmp_path}", check=False)
    assert result.returncode != 0
    assert "no_such_thing" in result.stderr and "quickstart" in result.stderr


def test_invalid_override_names_the_key(cli, tmp_path):
    result = cli(
        "fit", "experiment=quickstart", "trainer.max_stepz=3", f"paths.output_dir={tmp_path}", check=False
    )
    assert result.returncode != 0
    assert "max_stepz" in result.stderr


def test_missing_dataset_names_the_config_key(cli, tmp_path):
    result = cli(
        "fit",
        "experiment=cdm_base_32",
        f"paths.data_dir={tmp_path / 'nowhere'}",
        f"paths.output_dir={tmp_path / 'run'}",
        "trainer=cpu",
        check=False,
    )
    assert result.returncode != 0
    assert "data.root" in result.stderr


def test_cfg_job_prints_the_composed_config(cli):
    out = cli("fit", "experiment=quickstart", "--cfg", "job").stdout
    config = yaml.safe_load(out)
    assert config["name"] == "quickstart" and config["command"] == "fit"
    assert config["model"]["_target_"].endswith("ClassConditionalDiffusion")


def test_fit_resume_predict(cli, tmp_path):
    run = tmp_path / "run"
    common = ["experiment=quickstart", *SMALL, f"paths.output_dir={run}", "trainer.val_check_interval=2"]
    cli("fit", *common, "trainer.max_steps=4")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "config.yaml").is_file()
    assert list((run / "samples").glob("val_step*.png")), "validation sample grid missing"
    first = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["global_step"] == 4
    assert "current_model_state" in first, "EMA state missing from the checkpoint"

    cli("fit", *common, "trainer.max_steps=6", "ckpt_path=last")
    resumed = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert resumed["global_step"] == 6

    cli(
        "predict",
        "experiment=quickstart",
        *SMALL,
        f"paths.output_dir={run}",
        "ckpt_path=last",
        "model.predict.num_samples=3",
        "model.predict.batch_size=2",
    )
    written = sorted((run / "samples" / "predict").glob("sample*.png"))
    assert len(written) == 3
    grid = run / "samples" / "predict" / "grid.png"
    first_grid = grid.read_bytes()
    # a second predict (here another sampler, given as a bare count) leaves the first one's images alone
    result = cli("predict", "experiment=quickstart", *SMALL, f"paths.output_dir={run}", "ckpt_path=last",
                 "model.predict.num_samples=3", "model.sampler.name=ancestral", "model.sampler.steps=5")
    assert grid.read_bytes() == first_grid
    assert len(list((run / "samples" / "predict-2").glob("sample*.png"))) == 3
    assert str(run / "samples" / "predict-2" / "grid.png") in result.stdout + result.stderr

    # a new fit into a run that has checkpoints is refused: it would mix two runs' checkpoints and metrics
    config = (run / ".hydra" / "config.yaml").read_text()
    refused = cli("fit", *common, "trainer.max_steps=2", "seed=7", check=False)
    assert refused.returncode != 0
    assert "ckpt_path=last" in refused.stderr and "paths.output_dir" in refused.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
        "global_step"] == 6
    assert (run / ".hydra" / "config.yaml").read_text() == config  # the run's composed config is kept too


def test_metrics_csv_written(cli, tmp_path):
    run = tmp_path / "run"
    cli(
        "fit", "experiment=quickstart", *SMALL, "logger=csv", f"paths.output_dir={run}", "trainer.max_steps=2"
    )
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert any(row.get("train/loss") for row in rows)


# Training-free methods (DDRM) are not fitted; their own end-to-end tests restore through validate/test.
# Experiments on published weights (*imagenet256*) need the converted file: tests/e2e/test_pretrained.py.
TRAINING_FREE = ("ddrm_", "i2sb_imagenet256_")


def test_every_experiment_composes_and_runs_one_step(cli, tmp_path):
    exclude = "exclude=[" + ",".join(f"{prefix}*" for prefix in TRAINING_FREE) + "]"
    result = cli("fit", "-m", f"experiment=glob(*,{exclude})", *SMALL, f"paths.log_dir={tmp_path}")
    runs = list(tmp_path.rglob("checkpoints/last.ckpt"))
    trainable = [name for name in available_experiments() if not name.startswith(TRAINING_FREE)]
    assert len(runs) == len(trainable), result.stdout[-3000:]
