"""Latent diffusion end to end through the CLI: the autoencoder, then LDM-SR and latent I²SB on its frozen
latents (checkpoint passed by path), then predict — all at smoke size."""

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e

SMALL = ["debug=smoke", "num_threads=1"]


def latent_scale(checkpoint: Path, key: str) -> float:
    return float(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"][key])


def test_autoencoder_then_ldm_and_latent_i2sb_then_predict(cli, tmp_path):
    autoencoder_run = tmp_path / "autoencoder"
    cli(
        "fit",
        "experiment=autoencoder_quickstart",
        *SMALL,
        f"paths.output_dir={autoencoder_run}",
        "trainer.max_steps=2",
    )
    autoencoder = autoencoder_run / "checkpoints" / "last.ckpt"
    scale = latent_scale(autoencoder, "net.latent_scale")
    assert scale > 0, "the autoencoder checkpoint carries no latent scale factor"

    for experiment in ("ldm_quickstart", "latent_i2sb_quickstart"):
        run = tmp_path / experiment
        common = [
            f"experiment={experiment}",
            *SMALL,
            f"paths.output_dir={run}",
            f"model.autoencoder_ckpt={autoencoder}",
        ]
        cli("fit", *common, "trainer.max_steps=1")
        checkpoint = run / "checkpoints" / "last.ckpt"
        # The frozen autoencoder (and its scale) came from the path, not from an estimate.
        assert latent_scale(checkpoint, "autoencoder.net.latent_scale") == pytest.approx(scale, rel=1e-6)
        cli("predict", *common, "ckpt_path=last", "+trainer.limit_predict_batches=1")
        written = sorted((run / "samples" / "predict").glob("*.png"))
        assert len(written) >= 3, f"{experiment}: predictions missing"  # 2 images of the batch + the grid
