"""`python -m benchmarks.sr_compare` at a tiny budget: every method trains through the CLI, is scored on
test sets in SelfExSR's layout next to bicubic, and the table, JSON, plots and SR3's schedule are written."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lit_diffsr.metrics.image import psnr

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
METHODS = ["SR3", "SR3 training schedule", "CDM stage", "I2SB", "LDM-SR", "latent I2SB", "DDRM"]


def make_test_set(root: Path, name: str, count: int, seed: int) -> None:
    """`count` smooth random HR images of 40x36 and their 4x smaller LR, named as SelfExSR names them."""
    folder = root / name / "SelfExSR" / "image_SRF_4"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for index in range(1, count + 1):
        small = rng.integers(0, 256, (9, 10, 3), dtype=np.uint8)
        hr = Image.fromarray(small).resize((40, 36), Image.Resampling.BICUBIC)
        hr.save(folder / f"img_{index:03d}_SRF_4_HR.png")
        hr.resize((10, 9), Image.Resampling.BICUBIC).save(folder / f"img_{index:03d}_SRF_4_LR.png")


def test_small_budget_run_writes_one_table_with_every_method(tmp_path):
    data, out = tmp_path / "sr", tmp_path / "out"
    for number, name in enumerate(("Set5", "Set14")):
        make_test_set(data, name, 2, number)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "benchmarks.sr_compare", "--data", str(data), "--sets", "Set5", "Set14",
        "--steps", "2", "--checkpoint-every", "1", "--crop", "32", "--nfe", "1", "2", "--default-nfe", "2",
        "--search-images", "2", "--threads", "1", "--out", str(out), "--runs", str(tmp_path / "runs"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads((out / "sr_compare.json").read_text())
    assert list(result["methods"]) == METHODS
    for method, by_set in result["methods"].items():
        assert set(by_set) == {"Set5", "Set14"}
        row = by_set["Set5"]
        assert math.isfinite(row["psnr_y"]) and -1 <= row["ssim_y"] <= 1 and row["nfe"] == 2, method
        assert row["lpips"] is not None and row["seconds_per_image"] > 0
        assert result["trained_steps"][method] == 2
        assert set(result["quality_vs_nfe"][method]) == {"1", "2"}
        assert set(result["quality_vs_steps"][method]) == {"1", "2"}
    # bicubic is PIL's upsampling of the LR file, scored on the centre 32 px (corner on the LR grid)
    folder = data / "Set5" / "SelfExSR" / "image_SRF_4"
    expected = []
    for index in (1, 2):
        lr = Image.open(folder / f"img_{index:03d}_SRF_4_LR.png").resize((40, 36), Image.Resampling.BICUBIC)
        hr = Image.open(folder / f"img_{index:03d}_SRF_4_HR.png")
        pair = [torch.from_numpy(np.asarray(im, dtype=np.float64)[0:32, 4:36]).permute(2, 0, 1)[None]
                for im in (lr, hr)]  # fmt: skip
        expected.append(psnr(*pair, 255.0, y_channel=True, shave=4).item())
    assert result["bicubic"]["Set5"]["psnr_y"] == pytest.approx(np.mean(expected), abs=1e-4)

    schedule = json.loads((tmp_path / "runs" / "sr3" / "checkpoints" / "last.schedule.json").read_text())
    assert schedule["inference_schedule"]["num_steps"] == 2 and len(schedule["search"]) > 10
    table = (out / "sr_compare.md").read_text()
    assert all(f"| {method} |" in table for method in ["bicubic", *METHODS])
    for picture in ("quality_vs_nfe.png", "quality_vs_steps.png", "crops.png"):
        assert Image.open(out / picture).size[0] > 50
