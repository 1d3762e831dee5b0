"""Shared plumbing of every method: optimiser with warm-up, loss logging, validation samples, RNG state.

A method subclasses `DiffusionMethod` and implements
- `compute_losses(batch) -> dict` of per-batch scalars with a "loss" key (the one that is optimised);
- `sample(condition, *, seed, steps, stop_step, options) -> SampleOutput`: the one sampling contract
  (see `DiffusionMethod.sample`), used by validation, test, predict, the cascade and the benchmarks;
and, where it needs them, Lightning's `setup` (checks against the data) or its own `training_step`
(the autoencoder's two optimisers). Everything else (logging, sampling a few validation batches for metrics
and grids, predict outputs, checkpointed RNG state for exact resume) lives here so methods stay thin.
EMA is Lightning's `EMAWeightAveraging` callback: it swaps the averaged weights in for validation and
writes them as the checkpoint's `state_dict`, so `load_from_checkpoint` and predict use EMA weights.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import pkgutil
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import DictConfig, OmegaConf

from lit_diffsr.errors import ConfigError, UntrustedFileError
from lit_diffsr.methods.configs import OptimConfig, reject_unknown_keys, settings
from lit_diffsr.safe_load import first_line, load_tensors

log = logging.getLogger("lit_diffsr")


def as_dict(config: Any) -> dict:
    """Plain dict from a DictConfig / dict / None (hyper-parameters are stored as plain containers)."""
    if config is None:
        return {}
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return dict(config)


def check_options(options: Mapping[str, Any] | None, allowed: Sequence[str], method: str) -> dict:
    """The per-call `options` of a `sample` call as a dict; a key the method does not take is an error."""
    options = dict(options or {})
    reject_unknown_keys(options, allowed, f"the options of {method}.sample")
    return options


@dataclass(frozen=True)
class SampleOutput:
    """What `DiffusionMethod.sample` returns.

    images: (B, C, H, W) samples in [-1, 1] (x_s, noisy and unclipped, when `stop_step` truncated the chain);
    extras: further images for the callbacks, e.g. "condition": the degraded input at the output size that
        `SampleGrid` shows in its first row (DDRM's pseudo-inverse H^+ y);
    scores: per-batch scalars the method measured itself (logged as `<stage>/<name>` at validation / test).
    """

    images: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    scores: dict[str, torch.Tensor] = field(default_factory=dict)


def build_net(net: Any) -> torch.nn.Module:
    """Instantiate the network from its `_target_` config (a module passes through unchanged)."""
    if isinstance(net, torch.nn.Module):
        return net
    return instantiate(as_dict(net))


def flatten(config: Any, prefix: str = "model") -> dict[str, Any]:
    """{"model.optim.lr": 1e-4, ...} from nested dicts; lists and tuples are values (compared as lists)."""
    if isinstance(config, Mapping):
        return {k: v for key, value in config.items() for k, v in flatten(value, f"{prefix}.{key}").items()}
    return {prefix: list(config) if isinstance(config, tuple) else config}


def describe_changes(saved: Mapping, current: Mapping) -> list[str]:
    """`key: saved -> current` for each hyper-parameter a resumed run sets differently from its checkpoint."""
    before, after = flatten(as_dict(saved)), flatten(as_dict(current))
    missing = object()
    return [
        f"{key}: {before.get(key, 'unset')!r} -> {after.get(key, 'unset')!r}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key, missing) != after.get(key, missing)
    ]


def apply_optimiser_settings(checkpoint: dict, saved: Mapping, current: Mapping) -> None:
    """Write `current`'s lr, betas and weight decay into the checkpoint's optimiser and LR-schedule states
    before Lightning restores them over the config's values. The LR keeps its schedule position: every
    group's rate and every base rate are scaled by new lr / old lr; groups without weight decay keep none."""
    ratio = float(current["lr"]) / float(saved.get("lr", current["lr"]))
    for state in checkpoint.get("optimizer_states", []):
        for group in state.get("param_groups", []):
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
            group["betas"] = tuple(current["betas"])
            if group.get("weight_decay"):
                group["weight_decay"] = current["weight_decay"]
    for schedule in checkpoint.get("lr_schedulers", []):
        if "base_lrs" in schedule:
            schedule["base_lrs"] = [rate * ratio for rate in schedule["base_lrs"]]


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


TRUSTED_TARGETS_VARIABLE = "LIT_DIFFSR_TRUSTED_TARGETS"


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.cache
def own_classes() -> dict[str, type]:
    """The allow-list: every network class defined in `lit_diffsr.nets` and every method exported by
    `lit_diffsr.methods`, under their defining and their re-exported names. Only these names, read from a
    checkpoint, are imported or instantiated."""
    import lit_diffsr.methods as methods
    import lit_diffsr.nets as nets

    allowed: dict[str, type] = {}
    for info in pkgutil.walk_packages(nets.__path__, prefix="lit_diffsr.nets."):
        module = importlib.import_module(info.name)  # our own modules, by our own names
        for cls in vars(module).values():
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module) and cls.__module__ == info.name:
                allowed[class_path(cls)] = cls
    for package in (nets, methods):
        for name in package.__all__:
            cls = getattr(package, name)
            if isinstance(cls, type) and issubclass(cls, torch.nn.Module):
                allowed[f"{package.__name__}.{name}"] = allowed[class_path(cls)] = cls
    return allowed


def trusted_targets(extra: Sequence[str] = ()) -> set[str]:
    """Names beyond the allow-list that the user vouches for: `extra`, and the comma-separated
    LIT_DIFFSR_TRUSTED_TARGETS (for classes of their own, in checkpoints they made themselves)."""
    listed = os.environ.get(TRUSTED_TARGETS_VARIABLE, "")
    return {name.strip() for name in listed.split(",") if name.strip()} | set(extra)


def targets_in(config: Any, where: str) -> Iterator[tuple[str, str]]:
    """(key path, value) of every `_target_` in a nested dict/list config."""
    if isinstance(config, Mapping):
        for key, value in config.items():
            if key == "_target_":
                yield where, value
            else:
                yield from targets_in(value, f"{where}.{key}")
    elif isinstance(config, (list, tuple)):
        for index, value in enumerate(config):
            yield from targets_in(value, f"{where}[{index}]")


def refuse_foreign_name(name: Any, key: str, path: Path, what: str, trusted: set[str]) -> None:
    if not isinstance(name, str) or (name not in own_classes() and name not in trusted):
        raise UntrustedFileError(
            f"{what}: refused {path}: its {key} names {name!r}, which is not a lit_diffsr network or method; "
            f"loading it would import and run that code. If you made this file with a class of your own, "
            f"trust that name explicitly: {TRUSTED_TARGETS_VARIABLE}={name}"
        )


def load_method(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    what: str = "checkpoint",
    trusted: Sequence[str] = (),
) -> DiffusionMethod:
    """Load any trained method from its checkpoint alone (EMA weights: they are the checkpoint's state_dict).

    The class is recorded in the checkpoint by `DiffusionMethod.on_save_checkpoint`, so pipelines and
    training-free methods (DDRM priors, cascade stages, frozen autoencoders) need nothing but the path.
    The file is untrusted: it is read with weights_only=True, and its method class and every `_target_` of
    its hyper-parameters must be on the allow-list (`own_classes`) or in `trusted` /
    LIT_DIFFSR_TRUSTED_TARGETS before anything is imported. `what` names the input in error messages."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: no checkpoint at {path}; pass a .ckpt written by `lit_diffsr fit`")
    checkpoint = load_tensors(path, what=what, mmap=True)
    if not isinstance(checkpoint, Mapping) or "lit_diffsr_method" not in checkpoint:
        raise ConfigError(f"{what}: {path} was not written by lit_diffsr (no 'lit_diffsr_method' entry)")
    trusted_names = trusted_targets(trusted)
    method_name = checkpoint["lit_diffsr_method"]
    refuse_foreign_name(method_name, "lit_diffsr_method", path, what, trusted_names)
    for key, target in targets_in(checkpoint.get("hyper_parameters") or {}, "hyper_parameters"):
        refuse_foreign_name(target, f"{key}._target_", path, what, trusted_names)
    method_class = own_classes().get(method_name) or get_class(method_name)
    if not (isinstance(method_class, type) and issubclass(method_class, DiffusionMethod)):
        raise ConfigError(f"{what}: {path} names {method_name!r}, which is not a DiffusionMethod")
    try:
        return method_class.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except RuntimeError as error:  # e.g. weights that do not fit the network the hyper-parameters describe
        reason = first_line(error)
        raise ConfigError(f"{what}: {path} does not load into {method_class.__name__}: {reason}") from None


class DiffusionMethod(L.LightningModule):
    """Base LightningModule. `optim`: lr, weight_decay, betas, warmup_steps (linear warm-up, then flat)."""

    def __init__(self, net: Any, optim: dict | None = None, val_sample_batches: int = 1):
        super().__init__()
        self.net = build_net(net)
        self.optim = settings(OptimConfig, optim, "optim")
        self.val_sample_batches = val_sample_batches

    # -- to implement -------------------------------------------------------------------------------
    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def sample(
        self,
        condition: Mapping[str, Any],
        *,
        seed: int | None = None,
        steps: int | str | None = None,
        stop_step: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> SampleOutput:
        """Samples for one batch: the one sampling contract of every method.

        condition: the batch keys the method conditions on ("lr", "y", "mask"; "hr" where the method
            degrades it itself, as DDRM, or needs only the batch size); other keys are ignored.
        seed: seeds this call's noise (None: the method's configured seed, else the global RNG).
        steps: this call's sampling steps (respacing or NFE); None keeps the configured ones.
        stop_step: end the reverse chain at this step of the sampling process and return x_s (a cascade's
            truncated hand-over); methods without a Gaussian chain refuse it.
        options: this call's overrides of the method's sampler settings and sampling options (e.g.
            guidance_scale, eta); unknown keys are a ConfigError. Nothing is stored on the method.
        Subclasses override it with the short signature
        `def sample(self, condition, *, seed=None, steps=None, stop_step=None, options=None) -> SampleOutput`.
        """
        raise NotImplementedError

    def generate(self, batch: dict) -> torch.Tensor:
        """The samples of a data batch (its "seed" seeds them): what validation and predict use."""
        return self.sample(batch, seed=batch.get("seed")).images

    # -- shared helpers ------------------------------------------------------------------------------
    @property
    def datamodule(self):
        """The running Trainer's DataModule, or None (outside a Trainer, e.g. in a pipeline)."""
        return getattr(self._trainer, "datamodule", None) if self._trainer is not None else None

    def check_class_count(self, num_classes: int | None) -> None:
        """A class-conditional model needs an embedding row for every class of the data."""
        data_classes = getattr(self.datamodule, "num_classes", None)
        if num_classes and data_classes is None and hasattr(self.datamodule, "num_classes"):
            raise ConfigError(
                f"model.num_classes={num_classes} but the training images have no labels (no class "
                "sub-folders under data.root): arrange them as data.root/<class>/*.png, or train "
                "unconditionally with model.num_classes=null"
            )
        if num_classes and data_classes and data_classes > num_classes:
            raise ConfigError(
                f"model.num_classes={num_classes} but the data has {data_classes} classes; "
                f"set model.num_classes={data_classes}"
            )

    def require_lr(self, batch: dict) -> None:
        """A restoration method's batch must carry its degraded input."""
        if "lr" not in batch:
            raise ConfigError(
                f"{type(self).__name__} needs the degraded image batch['lr']: set data.degradation "
                "(e.g. [{type: downsample, scale: 4}]) or use data.dataset=paired"
            )

    def upscale_factor(self, batch: dict) -> int:
        """r = hr size / lr size of an SR batch; without "hr" (predict folders), the DataModule's factor."""
        self.require_lr(batch)
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

    def evaluation_step(self, stage: str, batch: dict, batch_idx: int) -> dict | None:
        """Log the losses of every batch; sample the first `val_sample_batches` for the callbacks."""
        losses = self.compute_losses(batch)
        self.log_dict(
            {f"{stage}/{k}": v for k, v in losses.items()}, sync_dist=True, batch_size=len(batch["hr"])
        )
        if batch_idx < self.val_sample_batches:
            return self.outputs_for_callbacks(stage, self.sample(batch, seed=batch.get("seed")))
        return None

    def outputs_for_callbacks(self, stage: str, output: SampleOutput) -> dict:
        """{"samples": images, **extras} for the metric and grid callbacks; the method's own scores logged."""
        if output.scores:
            scores = {f"{stage}/{name}": value for name, value in output.scores.items()}
            self.log_dict(scores, sync_dist=True, batch_size=len(output.images))
        return {"samples": output.images, **output.extras}

    def validation_step(self, batch: dict, batch_idx: int) -> dict | None:
        return self.evaluation_step("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> dict | None:
        return self.evaluation_step("test", batch, batch_idx)

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
        if self._trainer is None or self._trainer.state.fn != "fit":
            return
        # A resumed run uses the config's settings; say which differ from the checkpoint's, and apply the
        # optimiser's ones that the checkpoint would otherwise restore over them.
        saved = checkpoint.get("hyper_parameters") or {}
        for change in describe_changes(saved, self.hparams):
            log.warning("Resuming with a changed setting (the config's value applies): %s", change)
        apply_optimiser_settings(checkpoint, saved.get("optim") or {}, self.optim)
        states = checkpoint.get("rng_states")
        if not states:
            return
        kind, keys, *rest = states["numpy"]
        set_rng_states({**states, "numpy": (kind, keys.numpy().astype(np.uint32), *rest)})
