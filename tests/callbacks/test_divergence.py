"""DivergenceGuard: a non-finite step changes no weight, "stop" ends the run naming the step before anything
is saved, "skip" goes on and counts; without the guard the same run writes NaN weights."""

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_diffsr.callbacks import DivergenceGuard
from lit_diffsr.errors import DivergenceError
from lit_diffsr.methods import ClassConditionalDiffusion
from tests.tiny_nets import TINY_UNET

POISONED_STEPS = {3, 4}  # 0-based optimiser steps whose batch holds a NaN


def batches(count: int) -> torch.utils.data.DataLoader:
    torch.manual_seed(0)
    items = []
    for step in range(count):
        hr = torch.rand(2, 3, 16, 16) * 2 - 1
        if step in POISONED_STEPS:
            hr[0, 0, 0, 0] = float("nan")
        items.append({"hr": hr})
    return torch.utils.data.DataLoader(items, batch_size=None)


def fit(tmp_path, guard: DivergenceGuard | None, steps: int = 8, optim: dict | None = None):
    net = {**TINY_UNET, "learn_sigma": True}
    method = ClassConditionalDiffusion(net, diffusion={"num_timesteps": 50}, optim=optim)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_last=True,
                                  save_top_k=-1)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=2, limit_val_batches=0,
                        callbacks=[checkpoints] + ([guard] if guard else []))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trainer.fit(method, train_dataloaders=batches(steps))
    return method, trainer


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_without_the_guard_the_run_saves_nan_weights(tmp_path):
    method, _ = fit(tmp_path, guard=None)
    assert not all_finite(method.state_dict())
    assert not all_finite(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])


def test_stop_ends_the_run_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(DivergenceError, match=r"non-finite loss or gradient at step 4;") as error:
        fit(tmp_path, DivergenceGuard(action="stop"))
    assert "last.ckpt" in str(error.value) and "callbacks.divergence.action=skip" in str(error.value)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3 and all_finite(last["state_dict"])  # steps 1-3 were good
    saved = sorted(path.name for path in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert len(saved) == 4  # step 1, 2, 3 and last: nothing after the non-finite step


def test_skip_leaves_the_bad_steps_out_and_counts_them(tmp_path, caplog):
    guard = DivergenceGuard(action="skip", check_every_n_steps=1)
    method, trainer = fit(tmp_path, guard)
    assert trainer.global_step == 8 and all_finite(method.state_dict())
    assert guard.skipped == len(POISONED_STEPS)
    assert "Skipped 1 optimiser step(s) with a non-finite loss or gradient (2 so far" in caplog.text
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert all_finite(last["state_dict"]) and last["callbacks"]["DivergenceGuard"]["skipped"] == 2


def test_a_skipped_step_changes_no_weight(tmp_path):
    """The fused AdamW's found_inf: the weights after the poisoned step equal those before it."""
    guard = DivergenceGuard(action="skip", check_every_n_steps=1)
    method, _ = fit(tmp_path, guard, steps=5)
    before = torch.load(tmp_path / "checkpoints" / "epoch=0-step=3.ckpt", weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "checkpoints" / "epoch=0-step=5.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[key], after[key]) for key in before if key.startswith("net."))


def test_unknown_action_names_the_key():
    with pytest.raises(ValueError, match="callbacks.divergence.action='pause'"):
        DivergenceGuard(action="pause")
