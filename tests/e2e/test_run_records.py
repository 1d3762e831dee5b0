"""Progress in a log file and run records that survive later commands, through the real CLI: a fit with its
stdout in a file shows plain progress lines; predict / validate / test after it leave the fit's record
(.hydra/, hparams.yaml, metrics.csv) as it was and keep their own beside their outputs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# debug=smoke drops the progress display; put the default one back, a line for every step.
PROGRESS = "callbacks.progress={_target_: lit_diffsr.callbacks.progress.progress_display, log_every_s: 0}"
SMALL = ["experiment=quickstart", "debug=smoke", "num_threads=1", PROGRESS]


def cli_to_file(log: Path, *args: str) -> str:
    """`python -m lit_diffsr ARGS` with stdout and stderr going to the file `log`, as under nohup or Slurm,
    on a host with Slurm's `srun` (a stand-in on PATH); returns what it wrote."""
    fake_bin = log.parent / "bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1",
           "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "w") as out:
        result = subprocess.run([sys.executable, "-m", "lit_diffsr", *args], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, timeout=600)
    text = log.read_text()
    assert result.returncode == 0, text[-6000:]
    return text


def test_progress_lines_in_a_file_and_records_that_later_commands_keep(tmp_path):
    run = tmp_path / "run"
    fit_log = cli_to_file(tmp_path / "fit.out", "fit", *SMALL, f"paths.output_dir={run}",
                          "trainer.max_steps=4", "trainer.val_check_interval=2")
    steps = re.findall(r"fit step (\d)/4 \(\d+%\), loss [0-9.e-]+, [0-9.]+ steps/s, [0-9:?]+ left", fit_log)
    assert steps == ["1", "2", "3", "4"], fit_log[-3000:]
    assert "validate at step 4 batch 1/1: reverse step 2/2" in fit_log
    assert (run / "fit.log").is_file() and "fit step 4/4" in (run / "fit.log").read_text()
    # no noise: Lightning's srun hint, its tips, a FLOPs total of 0, one column per identical learning rate
    for noise in ("srun", "Tip:", "FLOPs", "Flops", "LeafSpec"):
        assert noise not in fit_log, fit_log[-3000:]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "lr-AdamW" in header and not [column for column in header if "/pg" in column]

    fit_record = {name: (run / name).read_bytes() for name in
                  (".hydra/config.yaml", ".hydra/overrides.yaml", "hparams.yaml", "metrics.csv")}
    predict_log = cli_to_file(tmp_path / "predict.out", "predict", *SMALL, f"paths.output_dir={run}",
                              "ckpt_path=last", "model.predict.num_samples=3")
    assert "predict batch 1/1: reverse step 2/2" in predict_log
    cli_to_file(tmp_path / "predict2.out", "predict", *SMALL, f"paths.output_dir={run}", "ckpt_path=last",
                "model.predict.num_samples=3", "model.sampler.name=ddim", "model.sampler.steps=3")
    cli_to_file(tmp_path / "validate.out", "validate", *SMALL, f"paths.output_dir={run}", "ckpt_path=last")
    test_log = cli_to_file(tmp_path / "test.out", "test", *SMALL, f"paths.output_dir={run}", "ckpt_path=last")
    assert re.search(r"test batch 1/\d+: reverse step 2/2", test_log)

    assert {name: (run / name).read_bytes() for name in fit_record} == fit_record
    samples = run / "samples"
    for folder, sampler in (("predict", "ancestral"), ("predict-2", "ddim")):
        config = yaml.safe_load((samples / folder / "config.yaml").read_text())
        assert config["command"] == "predict" and config["model"]["sampler"]["name"] == sampler
        assert config["ckpt_path"] == str(run / "checkpoints" / "last.ckpt")
        assert "ckpt_path=last" in yaml.safe_load((samples / folder / "overrides.yaml").read_text())
        assert len(list((samples / folder).glob("sample*.png"))) == 3
    assert "model.sampler.name=ddim" in (samples / "predict-2" / "overrides.yaml").read_text()
    # validate and test name their grids by the checkpoint's step, keep their CSV log, and test writes images
    assert (samples / "validate" / "val_step00000004.png").is_file()
    assert "val/loss" in (samples / "validate" / "metrics.csv").read_text()
    assert (samples / "test" / "test_step00000004.png").is_file()
    assert yaml.safe_load((samples / "test" / "config.yaml").read_text())["command"] == "test"
    assert len([p for p in (samples / "test").glob("*.png") if not p.name.startswith("test_step")]) == 2
    assert {p.name for p in run.glob("*.log")} == {"fit.log", "predict.log", "validate.log", "test.log"}


def test_sweep_jobs_are_named_by_their_overrides(tmp_path):
    cli_to_file(tmp_path / "sweep.out", "fit", "-m", "experiment=quickstart", "debug=smoke", "num_threads=1",
                "trainer.max_steps=1", f"paths.log_dir={tmp_path}", "seed=1,2")
    jobs = sorted(p.name for p in (tmp_path / "multirun" / "quickstart").glob("*/*") if p.is_dir())
    # Hydra's override_dirname: every override of the job but those naming paths, the experiment, ...
    assert jobs == ["0_seed=1,trainer.max_steps=1", "1_seed=2,trainer.max_steps=1"]
    assert len(list((tmp_path / "multirun" / "quickstart").glob("*/0_seed=1,*/.hydra/config.yaml"))) == 1


def test_help_shows_the_experiments_config(tmp_path):
    shown = cli_to_file(tmp_path / "help.out", "fit", "--help", "experiment=quickstart",
                        "trainer.max_steps=123")
    assert shown.startswith("python -m lit_diffsr fit [experiment=NAME]")
    assert "\nname: quickstart\n" in shown and "max_steps: 123" in shown


def test_fit_without_a_logger(tmp_path):
    run = tmp_path / "run"
    shown = cli_to_file(tmp_path / "fit.out", "fit", *SMALL, "logger=none", f"paths.output_dir={run}",
                        "trainer.max_steps=1")
    assert "fit step 1/1" in shown and not (run / "metrics.csv").exists()
