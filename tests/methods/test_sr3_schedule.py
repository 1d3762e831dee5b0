"""SR3 with a searched inference schedule: the search on a model that is wrong at high noise, the file
beside the checkpoint, and that predict / test / load_method sample with the saved schedule."""

import json
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from lit_diffsr.diffusion import InferenceSchedule
from lit_diffsr.errors import ConfigError
from lit_diffsr.methods import load_method, sr3_schedule
from lit_diffsr.methods.super_resolution import SR3
from tests.methods.test_sr_methods import TINY, ExactDenoiser, Spy, sr_batch


class WrongAtHighNoise(ExactDenoiser):
    """The exact eps of a Dirac at the condition, plus a constant bias where sqrt(gamma) < 0.3: a toy of
    the briefly trained SR3, whose colour is off when it is decided at the high-noise end."""

    def forward(self, x, t, cond=None, **_):
        eps = super().forward(x, t, cond=cond)
        return eps + 0.2 * (t < 300).to(eps.dtype).view(-1, 1, 1, 1)


def test_search_finds_a_schedule_that_avoids_the_wrong_levels_and_beats_the_training_one():
    method = SR3(WrongAtHighNoise(), sampler={"name": "ddim", "steps": "ddim10"}, scale_factor=2).eval()
    batch = sr_batch()
    hr = method.condition(batch["lr"])  # the toy's data: a Dirac at the upsampled condition
    best, scored = sr3_schedule.search_for(method, batch["lr"], hr, num_steps=10)
    assert best.start == "condition" and best.end_level > 0.3
    assert dict((s, v) for s, v in scored)[best] == max(v for _, v in scored)
    trained_process = method.sample(batch, seed=0).images
    training_schedule = sr3_schedule.psnr(trained_process, hr, (-1.0, 1.0), y_channel=True)
    assert max(v for _, v in scored) > training_schedule.mean().item() + 10  # the bias costs > 10 dB


def test_saved_schedule_is_used_when_loaded_beside_its_checkpoint(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    schedule = InferenceSchedule(6, 1e-3, 0.3, start="condition")
    written = sr3_schedule.write_schedule(ckpt, schedule, [(schedule, 20.0)])
    assert written == tmp_path / "last.schedule.json"
    assert json.loads(written.read_text())["search"][0]["psnr_y"] == 20.0

    net = Spy()
    method = SR3(net, scale_factor=2).eval()
    assert sr3_schedule.use_saved_schedule(method, ckpt).inference_schedule == schedule  # as train.py does
    method.generate({**sr_batch(), "seed": 0})
    seen = torch.stack([call["t"][0] for call in net.calls]).numpy()
    np.testing.assert_allclose(seen, 1000 * schedule.levels().numpy()[::-1], rtol=1e-6)  # 6 NFE, its levels

    fresh = SR3(Spy(), scale_factor=2)
    assert sr3_schedule.use_saved_schedule(fresh, ckpt).inference_schedule == schedule
    assert sr3_schedule.use_saved_schedule(fresh, tmp_path / "other.ckpt").inference_schedule is None


def test_condition_start_with_the_exact_denoiser_returns_the_condition():
    method = SR3(ExactDenoiser(), sampler={"name": "ddim", "clip_denoised": False}, scale_factor=2).eval()
    method.inference_schedule = InferenceSchedule(8, 1e-3, 0.3, start="condition")
    batch = sr_batch()
    torch.testing.assert_close(method.generate({**batch, "seed": 0}), method.condition(batch["lr"]),
                               rtol=0, atol=5e-3)


def test_a_broken_schedule_file_is_one_config_error_naming_it(tmp_path):
    (tmp_path / "last.schedule.json").write_text(json.dumps({"inference_schedule": {"num_steps": 0}}))
    with pytest.raises(ConfigError, match="last.schedule.json"):
        sr3_schedule.read_schedule(tmp_path / "last.ckpt")


def test_command_searches_a_checkpoint_and_saves_the_schedule_beside_it(tmp_path):
    method = SR3(TINY, scale_factor=2)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.fit(method, train_dataloaders=torch.utils.data.DataLoader([sr_batch()], batch_size=None))
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    images = tmp_path / "hr"
    images.mkdir()
    for index in range(2):
        Image.fromarray(np.random.default_rng(index).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            images / f"{index}.png"
        )
    sr3_schedule.main([str(ckpt), "--hr", str(images), "--steps", "3", "--crop", "16", "--images", "2"])
    saved = sr3_schedule.read_schedule(ckpt)
    assert saved.num_steps == 3
    search = json.loads(sr3_schedule.schedule_path(ckpt).read_text())["search"]
    best = max(search, key=lambda entry: entry["psnr_y"])
    assert saved.to_dict() == {key: value for key, value in best.items() if key != "psnr_y"}
    assert sr3_schedule.use_saved_schedule(load_method(ckpt), ckpt).inference_schedule == saved
