"""Shared plumbing of every method: optimiser with warm-up, loss logging, validation samples, RNG state.

A method subclasses `DiffusionMethod` and implements two things only:
- `compute_losses(batch) -> dict` of per-batch scalars with a "loss" key (the one that is optimised);
- `generate(batch) -> Tensor` in [-1, 1] shaped like the images the method produces for that batch.
Everything else (logging, sampling a few validation batches for metrics and grids, predict outputs,
checkpointed RNG state for exact resume) lives here so methods stay thin.
EMA is Lightning's `EMAWeightAveraging` callback: it swaps the averaged weights in for validation and
writes them as the checkpoint's `state_dict`, so `load_from_checkpoint` and predict use EMA weights.
"""

from __future__ import annotations

import importlib
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import DictConfig, OmegaConf

from lit_diffsr.errors import ConfigError


def as_dict(config: Any) -> dict:
    """Plain dict from a DictConfig / dict / None (hyper-parameters are stored as plain containers)."""
    if config is None:
        return {}
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def build_net(net: Any) -> torch.nn.Module:
    """Instantiate the network from its `_target_` config (a module passes through unchanged)."""
    if isinstance(net, torch.nn.Module):
        return net
    return instantiate(as_dict(net))


VALIDATION_SEED = 20_221_115  # any fixed number: validation noise is the same at every validation


def rng_states() -> dict:
    """Every global RNG stream a run draws from: torch (CPU and CUDA), NumPy, Python."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if states["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def load_method(path: str | Path, map_location: str | torch.device = "cpu") -> DiffusionMethod:
    """Load any trained method from its checkpoint alone (EMA weights: they are the checkpoint's state_dict).

    The class is recorded in the checkpoint by `DiffusionMethod.on_save_checkpoint`, so pipelines and
    training-free methods (DDRM priors, cascade stages, frozen autoencoders) need nothing but the path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}: pass the path of a .ckpt written by `lit_diffsr fit`")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    class_path = checkpoint.get("lit_diffsr_method")
    if class_path is None:
        raise ConfigError(f"{path} was not written by lit_diffsr (no 'lit_diffsr_method' entry)")
    module_name, _, class_name = class_path.rpartition(".")
    method_class = getattr(importlib.import_module(module_name), class_name)
    return method_class.load_from_checkpoint(path, map_location=map_location, weights_only=True)


class DiffusionMethod(L.LightningModule):
    """Base LightningModule. `optim`: lr, weight_decay, betas, warmup_steps (linear warm-up, then flat)."""

    def __init__(self, net: Any, optim: dict | None = None, val_sample_batches: int = 1):
        super().__init__()
        self.net = build_net(net)
        self.optim = {"lr": 1e-4, "weight_decay": 0.0, "betas": (0.9, 0.999), "warmup_steps": 0}
        self.optim.update(as_dict(optim))
        self.val_sample_batches = val_sample_batches

    # -- to implement -------------------------------------------------------------------------------
    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def generate(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    # -- shared helpers ------------------------------------------------------------------------------
    @property
    def datamodule(self):
        """The running Trainer's DataModule, or None (outside a Trainer, e.g. in a pipeline)."""
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def check_class_count(self, num_classes: int | None) -> None:
        """A class-conditional model needs an embedding row for every class of the data."""
        data_classes = getattr(self.datamodule, "num_classes", None)
        if num_classes and data_classes and data_classes > num_classes:
            raise ConfigError(
                f"model.num_classes={num_classes} but the data has {data_classes} classes; "
                f"set model.num_classes={data_classes}"
            )

    def upscale_factor(self, batch: dict) -> int:
        """r = hr size / lr size of an SR batch; without "hr" (predict folders), the DataModule's factor."""
        if "lr" not in batch:
            raise ConfigError(
                f"{type(self).__name__} needs the degraded image batch['lr']: set data.degradation "
                "(e.g. [{type: downsample, scale: 4}]) or use data.dataset=paired"
            )
        lr, hr = batch["lr"], batch.get("hr")
        if hr is None:
            scale = getattr(self.datamodule, "lr_scale", None)
            if scale is None:
                raise ConfigError(
                    f"{type(self).__name__} cannot tell the SR factor of a batch without 'hr': predict "
                    "through a DataModule whose data.degradation (or paired data) defines it"
                )
            return scale
        scale = hr.shape[-1] // lr.shape[-1]
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
            raise ValueError(
                f"batch['hr'] {tuple(hr.shape)} is not an integer multiple of batch['lr'] {tuple(lr.shape)}"
            )
        return scale

    # -- Lightning hooks ----------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        self.log_dict(
            {f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=len(batch["hr"])
        )
        # Not prog_bar: Lightning would read it back every step (a host-device sync); ProgressBar
        # (lit_diffsr.callbacks.progress) shows it, read at most once a second.
        self.log("loss", losses["loss"], logger=False, batch_size=len(batch["hr"]))
        return losses["loss"]

    def _evaluation_step(self, stage: str, batch: dict, batch_idx: int) -> dict | None:
        losses = self.compute_losses(batch)
        self.log_dict(
            {f"{stage}/{k}": v for k, v in losses.items()}, sync_dist=True, batch_size=len(batch["hr"])
        )
        if batch_idx < self.val_sample_batches:
            return {"samples": self.generate(batch)}
        return None

    def validation_step(self, batch: dict, batch_idx: int) -> dict | None:
        return self._evaluation_step("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> dict | None:
        return self._evaluation_step("test", batch, batch_idx)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"samples": self.generate(batch), "names": list(batch["name"])}

    def adamw(self, params, **options) -> torch.optim.AdamW:
        """AdamW with `optim`'s lr and betas, fused: one kernel for all parameters, on CPU too (0.84 ms
        against 3.9 ms a step for the quickstart UNet on 2 CPU threads; the default loops per tensor)."""
        return torch.optim.AdamW(params, lr=self.optim["lr"], betas=tuple(self.optim["betas"]), fused=True,
                                 **options)

    def clip_gradients(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping, also for the fused AdamW under mixed precision, which Lightning refuses
        (`trainer.precision=bf16-mixed` with `gradient_clip_val` stopped at the first step): bf16 has no loss
        scale to undo, and under fp16 the gradients are unscaled here before clipping (GradScaler.step
        then skips its own unscaling, as it does for any optimiser unscaled by hand)."""
        inner = getattr(optimizer, "optimizer", optimizer)  # LightningOptimizer under manual optimisation
        plugin = self.trainer.precision_plugin
        if gradient_clip_val is None:  # as Lightning: the trainer's settings
            gradient_clip_val = self.trainer.gradient_clip_val
            gradient_clip_algorithm = gradient_clip_algorithm or self.trainer.gradient_clip_algorithm
        handles_unscaling = getattr(inner, "_step_supports_amp_scaling", False)
        if not (gradient_clip_val and handles_unscaling and isinstance(plugin, MixedPrecision)):
            return super().clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if plugin.scaler is not None:
            plugin.scaler.unscale_(inner)
        parameters = [p for group in inner.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, gradient_clip_val)
        else:  # "norm", Lightning's default
            torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for param in self.net.parameters():
            if param.requires_grad:
                # Biases and norm scales are not decayed (standard AdamW practice).
                (decay if param.ndim > 1 else no_decay).append(param)
        optimizer = self.adamw(
            [
                {"params": decay, "weight_decay": self.optim["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ]
        )
        warmup = max(int(self.optim["warmup_steps"]), 0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1))
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # Validation draws its noise (loss terms, samples) from a stream of its own, seeded afresh every time:
    # the training stream is then the same whether a validation ran or not (a run requeued between a step
    # and its validation resumes without it), and losses and sample grids compare across validations.
    def on_validation_epoch_start(self) -> None:
        self._training_rng_states = rng_states()
        torch.manual_seed(VALIDATION_SEED + self.global_rank)

    def on_validation_epoch_end(self) -> None:
        set_rng_states(self._training_rng_states)

    # Exact resume: the RNG streams continue where the interrupted run left them.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["lit_diffsr_method"] = f"{type(self).__module__}.{type(self).__qualname__}"
        states = rng_states()
        # Stored as tensors and plain tuples so the checkpoint loads with torch.load(weights_only=True).
        kind, keys, *rest = states["numpy"]
        states["numpy"] = (kind, torch.from_numpy(keys.astype(np.int64)), *rest)
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint_step = int(checkpoint.get("global_step", 0))  # names the outputs of validate, test
        states = checkpoint.get("rng_states")
        if not states or self._trainer is None or self._trainer.state.fn != "fit":
            return
        kind, keys, *rest = states["numpy"]
        set_rng_states({**states, "numpy": (kind, keys.numpy().astype(np.uint32), *rest)})
