"""End to end through the CLI: the quickstart cascade (three tiny models) trains, samples as a cascade, and
the conditioning-augmentation level is searched with a validate sweep and the report."""

from pathlib import Path

import pytest
from PIL import Image

from lit_diffsr.pipelines.augmentation_search import best_level, collect

pytestmark = pytest.mark.e2e

SMALL = ["debug=smoke", "num_threads=1"]
STAGES = ("quickstart_base16", "quickstart_sr16_32", "quickstart_sr32_64")


def test_quickstart_cascade_trains_samples_and_searches_the_level(cli, tmp_path: Path):
    runs = tmp_path / "runs"
    # One process trains the three stages (a multirun), each into runs/<experiment>/ as the pipeline expects.
    cli(
        "fit",
        "-m",
        f"experiment={','.join(STAGES)}",
        *SMALL,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"paths.log_dir={runs}",
        f"hydra.sweep.dir={runs}",
        "hydra.sweep.subdir=${name}",
    )
    for name in STAGES:
        assert (runs / name / "checkpoints" / "last.ckpt").is_file(), name

    samples = tmp_path / "samples"
    cli(
        "sample",
        "pipeline=quickstart_cascade",
        f"paths.log_dir={runs}",
        f"paths.output_dir={samples}",
        "pipeline.num_samples=3",
        "pipeline.batch_size=2",
        "pipeline.stages.sr64.steps=ddim10",
        "num_threads=1",
    )
    for stage, size in (("base", 16), ("sr32", 32), ("sr64", 64)):
        written = sorted((samples / stage).glob("sample*.png"))
        assert len(written) == 3, stage
        assert Image.open(written[0]).size == (size, size)
        assert (samples / stage / "grid.png").is_file()
    assert (samples / "grid.png").is_file()

    sweep = tmp_path / "search"
    cli(
        "validate",
        "-m",
        "experiment=quickstart_sr16_32",
        *SMALL,
        f"ckpt_path={runs / 'quickstart_sr16_32' / 'checkpoints' / 'last.ckpt'}",
        "model.augmentation.sampling_level=0,101",
        f"hydra.sweep.dir={sweep}",
        "++callbacks.image_metrics._target_=lit_diffsr.callbacks.metrics.ImageMetrics",
        "++callbacks.image_metrics.scale=2",
    )
    results = collect(sweep, "val/psnr_y")
    assert set(results) == {0, 101}
    assert best_level(results) == max(results, key=results.get)


def test_sample_with_a_missing_checkpoint_names_the_stage(cli, tmp_path: Path):
    result = cli(
        "sample",
        "pipeline=quickstart_cascade",
        f"paths.log_dir={tmp_path / 'none'}",
        f"paths.output_dir={tmp_path / 'out'}",
        check=False,
    )
    assert result.returncode != 0
    assert "no checkpoint" in result.stderr and "quickstart_base16" in result.stderr


def test_predict_samples_sr3_with_the_schedule_saved_beside_its_checkpoint(cli, tmp_path: Path):
    from lit_diffsr.diffusion import InferenceSchedule
    from lit_diffsr.methods.sr3_schedule import write_schedule

    common = ["experiment=sr3_16_128", *SMALL, f"paths.output_dir={tmp_path}", "trainer.limit_val_batches=0"]
    cli("fit", *common, "trainer.max_steps=1")
    write_schedule(tmp_path / "checkpoints" / "last.ckpt", InferenceSchedule(3, 1e-3, 0.3, start="condition"))
    result = cli("predict", *common, "ckpt_path=last", "+trainer.limit_predict_batches=1")
    assert "SR3 samples with the inference schedule of" in result.stdout + result.stderr
    assert "num_steps=3" in result.stdout + result.stderr
    assert sorted((tmp_path / "samples" / "predict").glob("*.png"))
