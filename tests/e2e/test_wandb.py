"""`logger=wandb` works offline: no network, no API key, a run directory with metrics and images."""

import pytest

pytestmark = pytest.mark.e2e


def test_offline_wandb_run_records_metrics_and_sample_grids(cli, tmp_path):
    run = tmp_path / "run"
    cli(
        "fit",
        "experiment=quickstart",
        "debug=smoke",
        "num_threads=1",
        "logger=wandb",
        f"paths.output_dir={run}",
        "trainer.max_steps=2",
    )
    (offline,) = (run / "wandb").glob("offline-run-*")
    (records,) = offline.glob("run-*.wandb")
    # The history records are protobuf with the metric names in plain bytes.
    assert b"train/loss" in records.read_bytes()
    assert list((offline / "files" / "media" / "images").rglob("*.png")), "no sample grid logged"
    assert (run / "metrics.csv").is_file(), "the CSV history is kept beside W&B"
