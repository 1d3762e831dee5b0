"""Training from shards through the real CLI: prepare writes them, data.format=shards reads them."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.e2e

SMALL = ["experiment=quickstart", "debug=smoke", "num_threads=1", "data.dataset=folder", "data.format=shards"]


def test_quickstart_fits_from_shards_and_a_bad_set_stops_with_a_clear_error(cli, tmp_path):
    folders, shards = tmp_path / "folders", tmp_path / "shards"
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1)):
        for label in range(10):  # quickstart's 10 classes
            path = folders / split / f"class{label}" / f"{split}_{label}_0.png"
            for k in range(count):
                path = path.with_name(f"{split}_{label}_{k}.png")
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
    prepare = [
        sys.executable,
        "-m",
        "lit_diffsr.data.prepare",
        "shards",
        "--src",
        str(folders),
        "--dst",
        str(shards),
    ]
    subprocess.run([*prepare, "--chunk-bytes", "8kB"], check=True, capture_output=True)

    run = tmp_path / "run"
    cli("fit", *SMALL, f"+data.root={shards}", "trainer.max_steps=2", f"paths.output_dir={run}")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["ImageDataModule"]["train_sampler"]["consumed"] == 4  # 2 batches of 2: resumable

    (shards / "train" / "index.json").unlink()
    failed = cli("fit", *SMALL, f"+data.root={shards}", f"paths.output_dir={tmp_path / 'bad'}", check=False)
    assert failed.returncode == 2
    assert "holds no shard set" in failed.stderr  # (the tests' HYDRA_FULL_ERROR=1 may add the traceback)
