"""A diverged run never overwrites good weights: a step with a non-finite gradient is not applied, the run
stops with a message that names the step (or, if the user chose so, skips such steps and counts them), and
no checkpoint is written after a non-finite step in "stop" mode.

Checking every step would cost a host-device sync a step. Instead the check runs on the device: the
gradients' norms are reduced to one flag, which the fused AdamW reads as `found_inf` (the mechanism
GradScaler uses) and skips its update in the kernel, and a device counter records the first such step.
The host reads that counter every `check_every_n_steps` optimiser steps and before every checkpoint save.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch

from lit_diffsr.errors import ConfigError, DivergenceError

log = logging.getLogger("lit_diffsr")

ACTIONS = ("stop", "skip")


class DivergenceGuard(L.Callback):
    """`action="stop"`: end the run (DivergenceError, exit code 2) at the first check after a non-finite
    step; `"skip"`: leave out such steps and warn with their count at each check. Either way a non-finite
    step changes no weight. `check_every_n_steps=None` checks at the trainer's `log_every_n_steps`."""

    def __init__(self, action: str = "stop", check_every_n_steps: int | None = None):
        if action not in ACTIONS:
            raise ConfigError(f"callbacks.divergence.action={action!r} must be one of {', '.join(ACTIONS)}")
        self.action = action
        self.check_every_n_steps = check_every_n_steps
        self.skipped = 0  # reported so far (kept across resumes)
        self._count: torch.Tensor | None = None  # non-finite steps since the last check, on the device
        self._first: torch.Tensor | None = None  # the global step of the first of them, -1 if none

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(pl_module.device)

    def _reset(self, device: torch.device) -> None:
        self._count = torch.zeros((), dtype=torch.int64, device=device)
        self._first = torch.full((), -1, dtype=torch.int64, device=device)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16: GradScaler skips non-finite steps itself (routine while it calibrates its scale)
        inner = getattr(optimizer, "optimizer", optimizer)
        grads = [p.grad for group in inner.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        nonfinite = ~torch.stack(torch._foreach_norm(grads)).isfinite().all()
        if getattr(inner, "_step_supports_amp_scaling", False):
            inner.found_inf = nonfinite.float()  # fused AdamW skips this step on the device
        elif nonfinite.item():  # other optimisers: one read a step; a parameter without grad is not updated
            for group in inner.param_groups:
                for param in group["params"]:
                    param.grad = None
        self._first = torch.where((self._first < 0) & nonfinite, trainer.global_step, self._first)
        self._count += nonfinite

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        every = self.check_every_n_steps or trainer.log_every_n_steps
        if trainer.global_step % max(every, 1) == 0:
            self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer)  # raising here leaves the previous checkpoint in place

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        if self._count is None:
            return
        count, first = int(self._count), int(self._first)
        if count == 0:
            return
        self._reset(self._count.device)
        self.skipped += count
        if self.action == "skip":
            log.warning(
                "Skipped %d optimiser step(s) with a non-finite loss or gradient (%d so far; the first of "
                "these at step %d)", count, self.skipped, first + 1,
            )
            return
        last = trainer.checkpoint_callback
        kept = f" The last checkpoint is {last.last_model_path}." if last and last.last_model_path else ""
        raise DivergenceError(
            f"training diverged: non-finite loss or gradient at step {first + 1}; the run stopped without "
            f"applying it or saving anything non-finite.{kept} Try a lower model.optim.lr, a longer "
            "model.optim.warmup_steps, gradient clipping (trainer.gradient_clip_val=1.0) or bf16/fp32 "
            "instead of fp16, then resume with ckpt_path=last; or skip such steps with "
            "callbacks.divergence.action=skip"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
