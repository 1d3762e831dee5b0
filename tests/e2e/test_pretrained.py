"""Published-weight paths through the real CLI: `convert` a small ADM network (the reference adm_uncond,
built with openai's code) and a small diffusers UNet2DModel folder, then restore with DDRM and `predict`;
the experiments on openai's 256x256 prior stop with one line saying where to get it and how to convert it."""

import json
import math
from pathlib import Path

import pytest
import torch

from tests.e2e.test_ddrm import last_metrics

pytestmark = pytest.mark.e2e

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "adm"
SMALL_DDRM = ["debug=fast", "num_threads=1", "data.resolution=32", "data.batch_size=2",
              "model.sampler.steps=2", "trainer.limit_val_batches=1", "trainer.limit_predict_batches=1"]
SMALL_PREDICT = ["debug=fast", "num_threads=1", "model=pretrained", "model.sampler.steps=3",
                 "model.predict.num_samples=2", "model.predict.batch_size=2"]


@pytest.fixture(scope="module")
def adm_ckpt(tmp_path_factory) -> Path:
    from tests.e2e.conftest import run_cli

    flags = json.loads((REFERENCE / "configs.json").read_text())["adm_uncond"]["flags"]
    out = tmp_path_factory.mktemp("adm") / "adm_uncond.ckpt"
    result = run_cli("convert", "adm", str(REFERENCE / "adm_uncond.pt"), str(out), "--source", "guided",
                     "--flags", *(f"{key}={value}" for key, value in flags.items()))
    assert f"wrote {out}" in result.stdout
    return out


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory) -> Path:
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel(sample_size=32, block_out_channels=(16, 32), layers_per_block=1,
                        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                        attention_head_dim=8)
    folder = tmp_path_factory.mktemp("diffusers") / "unet"
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def check_ddrm_and_predict(cli, tmp_path: Path, prior: Path, checkpoint: Path) -> None:
    cli("validate", "experiment=ddrm_sr4x", *SMALL_DDRM, f"model.prior_ckpt={prior}",
        f"paths.output_dir={tmp_path / 'ddrm'}")
    metrics = last_metrics(tmp_path / "ddrm" / "samples" / "validate")  # validate keeps its own log there
    assert math.isfinite(metrics["val/psnr"]) and math.isfinite(metrics["val/psnr_pinv"])
    cli("predict", *SMALL_PREDICT, f"model.path={checkpoint}", f"paths.output_dir={tmp_path / 'predict'}")
    assert len(list((tmp_path / "predict" / "samples" / "predict").glob("sample*.png"))) == 2


def test_ddrm_and_predict_on_a_converted_adm_network(cli, tmp_path, adm_ckpt):
    check_ddrm_and_predict(cli, tmp_path, adm_ckpt, adm_ckpt)


def test_ddrm_and_predict_on_a_diffusers_folder(cli, tmp_path, diffusers_folder):
    converted = tmp_path / "from_diffusers.ckpt"
    cli("convert", "diffusers", str(diffusers_folder), str(converted))
    check_ddrm_and_predict(cli, tmp_path, diffusers_folder, converted)  # DDRM reads the folder itself
    cli("convert", "to-diffusers", str(converted), str(tmp_path / "again"))
    assert json.loads((tmp_path / "again" / "config.json").read_text())["_class_name"] == "UNet2DModel"


@pytest.mark.parametrize("experiment", ["ddrm_imagenet256_sr4x", "i2sb_imagenet256_sr4x_adm"])
def test_experiments_on_openai_weights_say_where_to_get_them(cli, tmp_path, experiment):
    command = "validate" if experiment.startswith("ddrm") else "fit"
    result = cli(command, f"experiment={experiment}", "trainer=cpu", f"paths.root_dir={tmp_path}",
                 f"paths.output_dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]  # (run_cli sets HYDRA_FULL_ERROR: tracebacks may show)
    url = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt"
    assert url in errors[0] and "--preset 256x256_diffusion_uncond" in errors[0]
    assert "python -m lit_diffsr convert adm 256x256_diffusion_uncond.pt" in errors[0]
