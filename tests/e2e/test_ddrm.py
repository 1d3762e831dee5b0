"""DDRM through the real CLI: a quickstart prior trained for two steps restores with every ddrm_* experiment.

The DDRM model has no network of its own, so `debug=smoke` (which shrinks `model.net`) does not apply: the
runs use `debug=fast` plus explicit small overrides, at the smoke prior's 16 pixels.
"""

import csv
import math
from pathlib import Path

import pytest
from PIL import Image

from lit_diffsr.cli import available_experiments

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("ddrm_prior")]  # one worker trains the prior

RESOLUTION = 16
SMALL_DDRM = ["debug=fast", "num_threads=1", f"data.resolution={RESOLUTION}", "data.batch_size=2",
              "model.sampler.steps=2", "trainer.limit_val_batches=1"]


@pytest.fixture(scope="module")
def prior_ckpt(tmp_path_factory) -> Path:
    from tests.e2e.conftest import run_cli

    run = tmp_path_factory.mktemp("prior")
    run_cli("fit", "experiment=quickstart", "debug=smoke", "num_threads=1", "trainer.max_steps=2",
            f"paths.output_dir={run}")
    return run / "checkpoints" / "last.ckpt"


def last_metrics(run: Path) -> dict[str, float]:
    """The last value of each column of a run's metrics.csv."""
    values = {}
    for row in csv.DictReader(open(run / "metrics.csv")):
        values.update({key: float(value) for key, value in row.items() if value not in ("", None)})
    return values


def test_every_ddrm_experiment_restores_with_a_trained_prior(cli, tmp_path, prior_ckpt):
    # the ddrm_imagenet256_* experiments need openai's prior: tests/e2e/test_pretrained.py
    names = [name for name in available_experiments()
             if name.startswith("ddrm_") and not name.startswith("ddrm_imagenet256_")]
    assert len(names) == 7
    # model=ddrm: a multirun applies the overrides to the primary config (model=classcond) too
    experiments = "experiment=glob(ddrm_*,exclude=ddrm_imagenet256_*)"
    result = cli("validate", "-m", experiments, "model=ddrm", *SMALL_DDRM,
                 f"model.prior_ckpt={prior_ckpt}", f"paths.log_dir={tmp_path}")
    # validate writes its CSV log, record and grid into <job>/samples/validate/
    runs = sorted(path.parent for path in tmp_path.rglob("metrics.csv"))
    assert len(runs) == len(names), result.stdout[-3000:]
    for run in runs:
        assert run.name == "validate" and (run / "config.yaml").is_file()
        metrics = last_metrics(run)
        for key in ("val/psnr", "val/ssim", "val/psnr_pinv", "val/ssim_pinv"):
            assert math.isfinite(metrics[key]), (run, metrics)
        grid = Image.open(next(run.glob("val_step*.png")))
        # rows degraded | restored | original of one batch of 2, tiles enlarged 4x to 64 px, padding 2
        assert grid.size == (2 * (4 * RESOLUTION + 2) + 2, 3 * (4 * RESOLUTION + 2) + 2)


def test_test_and_predict_restore(cli, tmp_path, prior_ckpt):
    # the ddrm_* experiments set these limits (the base trainer config has none: a multirun cannot set them)
    common = ["experiment=ddrm_inpaint", *SMALL_DDRM, f"model.prior_ckpt={prior_ckpt}",
              "trainer.limit_test_batches=1", "trainer.limit_predict_batches=1"]
    cli("test", *common, f"paths.output_dir={tmp_path / 'test'}")
    tested = tmp_path / "test" / "samples" / "test"
    assert math.isfinite(last_metrics(tested)["test/psnr"])
    # the restored images of the tested batch, and the grid named by the prior's step
    assert len([path for path in tested.glob("*.png") if not path.name.startswith("test_step")]) == 2
    assert (tested / "test_step00000000.png").is_file()
    cli("predict", *common, f"paths.output_dir={tmp_path / 'predict'}")
    assert len(list((tmp_path / "predict" / "samples" / "predict").glob("*_*.png"))) == 2


def test_a_prior_of_another_resolution_is_a_clear_error(cli, tmp_path, prior_ckpt):
    result = cli("validate", "experiment=ddrm_sr4x", *SMALL_DDRM, "data.resolution=32",
                 f"model.prior_ckpt={prior_ckpt}", f"paths.output_dir={tmp_path}", check=False)
    assert result.returncode == 2
    assert "model.prior_ckpt" in result.stderr and f"set data.resolution={RESOLUTION}" in result.stderr
