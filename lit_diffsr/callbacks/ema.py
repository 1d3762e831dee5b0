"""EMA of the weights with one fused update per step and no host-device synchronisation.

Lightning's `EMAWeightAveraging` averages with a per-tensor `avg_fn` (hundreds of small kernels per step
for a UNet), and torch's `AveragedModel.update_parameters` reads its step counter `n_averaged` back to
the host twice per update (`n_averaged == 0`, `n_averaged > 0`), which blocks on GPU. `ForeachEMA` keeps
Lightning's callback (swap-in for validation, EMA weights as the checkpoint's `state_dict`, the same
checkpoint keys) and replaces only the update: torch's `get_ema_multi_avg_fn` (`torch._foreach_lerp_` over
all tensors at once), with the "first update copies" flag held on the host.
"""

from __future__ import annotations

import itertools
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def warmed_up_decay(decay: float, updates: int) -> float:
    """min(decay, (1 + n) / (10 + n)) after n updates: TensorFlow's ExponentialMovingAverage with
    `num_updates` (also LDM's EMA). A 0.9999 average after 5k steps would otherwise still hold 61% of the
    initial weights (zero output layers included), and early validation samples would show them."""
    return min(decay, (1 + updates) / (10 + updates))


class _ForeachEMAModel(AveragedModel):
    """`AveragedModel` whose update is w_ema <- decay w_ema + (1 - decay) w, fused, without syncs."""

    def __init__(self, model: torch.nn.Module, device: Any, use_buffers: bool, decay: float,
                 warmup: bool = True) -> None:
        super().__init__(model, device=device, use_buffers=use_buffers)
        self.decay = decay
        self.warmup = warmup
        self._updates: int | None = None  # None: not read yet (a resumed run restores n_averaged)

    def _averaged_tensors(self, model: torch.nn.Module) -> list[torch.Tensor]:
        tensors = model.parameters()
        if self.use_buffers:
            tensors = itertools.chain(tensors, model.buffers())
        return [tensor.detach() for tensor in tensors]

    @torch.no_grad()
    def update_parameters(self, model: torch.nn.Module) -> None:
        averaged = self._averaged_tensors(self.module)
        current = [c.to(a.device, non_blocking=True) for a, c in zip(averaged, self._averaged_tensors(model),
                                                                      strict=True)]
        if self._updates is None:
            self._updates = int(self.n_averaged)  # one read per run, not per step
        if self._updates == 0:
            torch._foreach_copy_(averaged, current)  # the first update copies the weights
        else:
            # w_ema <- decay w_ema + (1 - decay) w (the 0.9999 EMA of Ho et al. 2020, App. B): torch's
            # multi-tensor EMA, one `_foreach_lerp_` over the float tensors, integer ones (counters) apart.
            decay = warmed_up_decay(self.decay, self._updates) if self.warmup else self.decay
            update = get_ema_multi_avg_fn(decay)
            for is_float in (True, False):
                pairs = [(a, c) for a, c in zip(averaged, current, strict=True)
                         if a.is_floating_point() == is_float]
                if pairs:
                    update(*map(list, zip(*pairs, strict=True)), None)
        if not self.use_buffers:
            torch._foreach_copy_(list(self.module.buffers()), [b.detach() for b in model.buffers()])
        self.n_averaged += 1  # stays on the device: no sync
        self._updates += 1

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._updates = None  # re-read n_averaged from the restored state
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class ForeachEMA(EMAWeightAveraging):
    """`EMAWeightAveraging` with a fused, sync-free update and a decay warm-up; same checkpoints.

    Args:
        decay: the EMA decay (0.9999 in Ho et al. 2020, App. B).
        warmup: use min(decay, (1 + n) / (10 + n)) at update n (see `warmed_up_decay`); false gives
            exactly Lightning's `EMAWeightAveraging` average.
        update_every_n_steps, update_starting_at_step, update_starting_at_epoch, device, use_buffers:
            as in `lightning.pytorch.callbacks.EMAWeightAveraging`.
    """

    def __init__(self, device: Any = None, use_buffers: bool = True, decay: float = 0.999,
                 update_every_n_steps: int = 1, update_starting_at_step: int | None = None,
                 update_starting_at_epoch: int | None = None, warmup: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ForeachEMA: decay={decay} must lie in [0, 1] (e.g. 0.9999)")
        super().__init__(device=device, use_buffers=use_buffers, decay=decay,
                         update_every_n_steps=update_every_n_steps,
                         update_starting_at_step=update_starting_at_step,
                         update_starting_at_epoch=update_starting_at_epoch)
        self.decay = decay
        self.warmup = warmup

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # As WeightAveraging.setup, with the fused model (lit_diffsr methods build their layers in
        # __init__, so there is no configure_model hook to call first).
        if stage == "fit":
            self._average_model = _ForeachEMAModel(pl_module, self._device or pl_module.device,
                                                   self._use_buffers, self.decay, self.warmup)
