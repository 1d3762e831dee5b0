"""The recipe of docs/adding_a_method.md, followed for a toy method: a LightningModule with the loss and the
sampling contract, a typed config, a model YAML and an experiment (both written outside the package, found
with --config-dir), then `fit` for 2 steps and `predict` through the real CLI in subprocesses."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from lit_diffsr.errors import ConfigError
from tests.e2e.conftest import run_cli

# The method's module, as a user would write it, written to a folder on the path (a module of tests/ is not
# importable by name in the CLI's subprocess: `tests` may be another installed package).
TOY_METHOD = '''\
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lit_diffsr.ops.resize import upsample_bicubic
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods.base import DiffusionMethod, SampleOutput, as_dict, check_options
from lit_diffsr.methods.configs import settings


@dataclass(frozen=True)
class ToySamplerConfig:
    """steps: refinement passes at sampling; noise_std: the std of the noise the net learns to remove."""

    steps: int = 2
    noise_std: float = 0.5

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise ConfigError(f"model.sampler.steps={self.steps!r} must be a whole number >= 1")


class ToyRefiner(DiffusionMethod):
    """A toy SR method: the UNet maps [noisy hr | upsampled lr] to hr (one noise level); sampling starts
    from noise and applies it `steps` times. Not a paper's method: the smallest that follows the recipe."""

    def __init__(self, net: Any, sampler: dict | None = None, scale_factor: int = 2,
                 optim: dict | None = None, val_sample_batches: int = 1):
        super().__init__(net, optim=optim, val_sample_batches=val_sample_batches)
        net, sampler, optim = map(as_dict, (net, sampler, optim))  # DictConfig -> dict, before saving
        self.save_hyperparameters()  # plain containers: checkpoints load with weights_only=True
        self.sampler = settings(ToySamplerConfig, sampler, "sampler")
        self.scale = int(scale_factor)

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        hr, cond = batch["hr"], upsample_bicubic(batch["lr"], self.scale)
        noisy = hr + self.sampler["noise_std"] * torch.randn_like(hr)
        predicted = self.net(noisy, torch.zeros(len(hr), device=hr.device), cond=cond)
        return {"loss": F.mse_loss(predicted, hr)}

    @torch.no_grad()
    def sample(self, condition: Mapping[str, Any], *, seed: int | None = None, steps: int | str | None = None,
               stop_step: int | None = None, options: Mapping[str, Any] | None = None) -> SampleOutput:
        check_options(options, (), type(self).__name__)
        if stop_step is not None:
            raise ConfigError("ToyRefiner has no stop_step")
        cond = upsample_bicubic(condition["lr"].to(self.device), self.scale)
        generator = None if seed is None else torch.Generator(device=self.device).manual_seed(int(seed))
        x = torch.randn(cond.shape, generator=generator, device=self.device)
        for _ in range(int(steps or self.sampler["steps"])):
            x = self.net(x, torch.zeros(len(x), device=x.device), cond=cond)
        return SampleOutput(x.clamp(-1, 1))
'''


def toy_module(folder: Path, monkeypatch) -> Any:
    """toy_refiner.py written to `folder`, which goes on sys.path and PYTHONPATH (for the CLI), imported."""
    (folder / "toy_refiner.py").write_text(TOY_METHOD)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.delitem(sys.modules, "toy_refiner", raising=False)
    return importlib.import_module("toy_refiner")


MODEL_YAML = """\
defaults:
  - /net@net: unet
  - _self_
_target_: toy_refiner.ToyRefiner
scale_factor: 2
net:
  cond_channels: 3
sampler:
  steps: 3
"""
EXPERIMENT_YAML = """\
# @package _global_
defaults:
  - override /model: toy_refiner
  - override /callbacks: restoration
name: toy_refiner
data:
  degradation:
    - {type: downsample, scale: 2}
"""


def test_the_toy_contract_in_process(tmp_path: Path, monkeypatch):
    ToyRefiner = toy_module(tmp_path, monkeypatch).ToyRefiner
    net = {"_target_": "lit_diffsr.nets.UNet", "image_size": 8, "model_channels": 8, "channel_mult": [1],
           "num_res_blocks": 1, "attention_resolutions": [], "num_heads": 1, "norm_groups": 4,
           "cond_channels": 3}
    method = ToyRefiner(net)
    torch.nn.init.normal_(method.net.out[-1].weight, std=0.05)  # the UNet starts at zero output
    lr = torch.rand(2, 3, 4, 4) * 2 - 1
    first, again = (method.sample({"lr": lr}, seed=1).images for _ in range(2))
    assert first.shape == (2, 3, 8, 8) and torch.equal(first, again)
    assert not torch.equal(first, method.sample({"lr": lr}, seed=2).images)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['stepz'\] in model.sampler"):
        ToyRefiner(net, sampler={"stepz": 2})
    with pytest.raises(ConfigError, match="model.sampler.steps=0"):
        ToyRefiner(net, sampler={"steps": 0})
    with pytest.raises(ConfigError, match="options of ToyRefiner.sample"):
        method.sample({"lr": lr}, options={"eta": 0.0})


@pytest.mark.e2e
def test_a_toy_method_from_the_recipe_fits_and_predicts_through_the_cli(tmp_path: Path, monkeypatch):
    toy_module(tmp_path, monkeypatch)
    conf = tmp_path / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "model" / "toy_refiner.yaml").write_text(MODEL_YAML)
    (conf / "experiment" / "toy_refiner.yaml").write_text(EXPERIMENT_YAML)
    run = tmp_path / "run"
    common = ["experiment=toy_refiner", "--config-dir", str(conf), "debug=smoke", "num_threads=1",
              f"paths.output_dir={run}"]
    run_cli("fit", *common, "trainer.max_steps=2")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["lit_diffsr_method"] == "toy_refiner.ToyRefiner"
    assert checkpoint["hyper_parameters"]["sampler"] == {"steps": "2"}  # debug=smoke's steps, a plain dict
    run_cli("predict", *common, "ckpt_path=last")
    written = [path for path in (run / "samples" / "predict").glob("*.png") if path.name != "grid.png"]
    assert written and all(Image.open(path).size == (16, 16) for path in written)
