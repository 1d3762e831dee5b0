"""No host-device synchronisation per training step, for every trainable method, in a real `Trainer.fit`.

On a GPU, reading a tensor back (`.item()`, `float(t)`, `if t:`, `.tolist()`, `.numpy()`, `.cpu()`) or an op
whose output size depends on the data (`nonzero`, `masked_select`, `unique`) makes the host wait until every
queued kernel has run, so it cannot queue the next step meanwhile. On the CPU the same reads still go
through the dispatcher (or the patched Tensor methods), so `HostReads` counts them here. A fit of 2 steps
and one of 5 must read equally often: reads at set-up (the EMA's counter, a latent scale estimated once,
the progress bar's first draw) are allowed, a read per step is not. Logging reads its metrics once per
`log_every_n_steps` by design (set above both step counts here). The opt-in
`diffusion.timestep_sampler: loss_aware` keeps its loss history on the host, as in improved-DDPM, and is
not covered.
"""

import collections
import traceback
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch.utils._python_dispatch import TorchDispatchMode

from lit_diffsr.callbacks import DivergenceGuard, ForeachEMA, ProgressBar
from lit_diffsr.callbacks.progress import LogProgress
from lit_diffsr.methods import ClassConditionalDiffusion
from lit_diffsr.methods.autoencoder import AutoencoderMethod
from lit_diffsr.methods.i2sb import I2SB
from lit_diffsr.methods.latent_i2sb import LatentI2SB
from lit_diffsr.methods.ldm_sr import LatentDiffusionSR
from lit_diffsr.methods.super_resolution import SR3, CascadeStage
from tests.tiny_nets import TINY_AUTOENCODER, TINY_UNET

aten = torch.ops.aten
READING_OPS = {aten._local_scalar_dense, aten.nonzero, aten.masked_select, aten.equal, aten._unique2,
               aten.unique_dim, aten.unique_consecutive}
READING_METHODS = ("tolist", "numpy", "cpu")  # no dispatch on a CPU tensor: patched instead


class HostReads(TorchDispatchMode):
    """Counts reads of tensor data by the host, keyed by the read and the innermost project/Lightning line."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.reads: collections.Counter = collections.Counter()
        for name in READING_METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._recording(name, original))

    def _recording(self, name, original):
        def read(tensor, *args, **kwargs):
            self._record(f"Tensor.{name}")
            return original(tensor, *args, **kwargs)

        return read

    def _record(self, what: str) -> None:
        stack = traceback.extract_stack()[:-2]
        frames = [f for f in stack if "lit_diffsr" in f.filename or "lightning" in f.filename]
        where = f"{frames[-1].filename.rsplit('/', 2)[-1]}:{frames[-1].lineno}" if frames else "?"
        self.reads[f"{what} at {where}"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in READING_OPS:
            self._record(str(func))
        return func(*args, **(kwargs or {}))


def sr_batch(size: int = 16, scale: int = 4, classes: bool = False) -> dict:
    hr = torch.rand(4, 3, size, size) * 2 - 1
    batch = {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, scale)}
    if classes:
        batch["y"] = torch.arange(4) % 3
    return batch


SR_UNET = {**TINY_UNET, "cond_channels": 3}
FIXED_VARIANCE = {"num_timesteps": 50, "variance": "fixed_small", "loss": "mse"}
DISCRIMINATOR = {"start_step": 0, "channels": 8, "num_layers": 2, "norm_groups": 4}
METHODS = {
    "classcond (learned variance, hybrid loss)": lambda: (
        ClassConditionalDiffusion(
            {**TINY_UNET, "num_classes": 3, "learn_sigma": True}, num_classes=3, label_dropout=0.1,
            diffusion={"num_timesteps": 50},
        ),
        {"hr": torch.rand(4, 3, 16, 16) * 2 - 1, "y": torch.arange(4) % 3},
    ),
    "sr3": lambda: (SR3(SR_UNET, scale_factor=4), sr_batch()),
    "cascade stage (blur + noise augmentation)": lambda: (
        CascadeStage(
            {**SR_UNET, "num_classes": 3, "use_aug_level": True}, scale_factor=4, num_classes=3,
            label_dropout=0.1, augmentation={"blur": {"probability": 0.5}, "noise": {"max_level": 300}},
            diffusion=FIXED_VARIANCE,
        ),
        sr_batch(classes=True),
    ),
    "i2sb": lambda: (I2SB(TINY_UNET, bridge={"n_steps": 100}, sampler={"steps": 5}), sr_batch()),
    "ldm sr": lambda: (
        LatentDiffusionSR(TINY_UNET, autoencoder=TINY_AUTOENCODER, diffusion=FIXED_VARIANCE), sr_batch()
    ),
    "latent i2sb": lambda: (
        LatentI2SB(TINY_UNET, autoencoder=TINY_AUTOENCODER, bridge={"n_steps": 100}, sampler={"steps": 5}),
        sr_batch(),
    ),
    "autoencoder (with discriminator)": lambda: (
        AutoencoderMethod(TINY_AUTOENCODER, loss={"perceptual_weight": 0.0}, discriminator=DISCRIMINATOR),
        {"hr": torch.rand(4, 3, 16, 16) * 2 - 1},
    ),
}


def host_reads_of_fit(make_method, steps: int, metrics_every_s: float, tmp_path, monkeypatch,
                      progress=lambda every_s: ProgressBar(metrics_every_s=every_s)) -> dict:
    """Host reads of a `steps`-step fit with the default callbacks that act during training (the progress
    display: `progress(metrics_every_s)`)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained-autoencoder and Lightning's advice
        method, batch = make_method()
        trainer = L.Trainer(
            max_epochs=1,
            limit_train_batches=steps,  # batches, not optimiser steps: the autoencoder steps two optimisers
            accelerator="cpu",
            logger=CSVLogger(tmp_path / str(steps)),
            log_every_n_steps=100,
            # As trainer/default.yaml; the autoencoder, optimised by hand, clips its gradients itself.
            gradient_clip_val=1.0 if method.automatic_optimization else None,
            limit_val_batches=0,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[
                DivergenceGuard(),
                ForeachEMA(decay=0.999),
                progress(metrics_every_s),
                LearningRateMonitor(logging_interval="step"),
            ],
        )
        batches = torch.utils.data.DataLoader([batch] * steps, batch_size=None)
        with HostReads(monkeypatch) as recorder:
            trainer.fit(method, train_dataloaders=batches)
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == steps
    return dict(recorder.reads)


@pytest.mark.parametrize("name", METHODS)
def test_a_training_step_never_reads_a_tensor_back(name, tmp_path, monkeypatch):
    short = host_reads_of_fit(METHODS[name], 2, 1e9, tmp_path, monkeypatch)
    long = host_reads_of_fit(METHODS[name], 5, 1e9, tmp_path, monkeypatch)
    assert long == short, f"reads per step: { {k: long.get(k, 0) - short.get(k, 0) for k in long} }"


def test_the_progress_bar_reads_once_per_interval_and_the_recorder_sees_it(tmp_path, monkeypatch):
    make = METHODS["sr3"]
    every_batch = host_reads_of_fit(make, 5, 0.0, tmp_path, monkeypatch)
    rarely = host_reads_of_fit(make, 5, 1e9, tmp_path, monkeypatch)
    assert sum(every_batch.values()) - sum(rarely.values()) >= 4  # one read per batch after the first
    assert any("progress.py" in where for where in every_batch)


def test_plain_progress_lines_read_once_per_interval(tmp_path, monkeypatch):
    make = METHODS["sr3"]
    every_batch = host_reads_of_fit(make, 5, 0.0, tmp_path, monkeypatch, LogProgress)
    rarely = host_reads_of_fit(make, 5, 1e9, tmp_path, monkeypatch, LogProgress)
    assert sum(every_batch.values()) - sum(rarely.values()) >= 4  # a line, and a read, per batch
    assert any("progress.py" in where for where in every_batch)
    short = host_reads_of_fit(make, 2, 1e9, tmp_path, monkeypatch, LogProgress)
    assert short == rarely  # no read per step in between


def test_the_progress_bar_shows_the_loss_it_read(tmp_path):
    method, batch = METHODS["sr3"]()
    bar = ProgressBar(metrics_every_s=0.0)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[bar])
    trainer.fit(method, train_dataloaders=torch.utils.data.DataLoader([batch] * 2, batch_size=None))
    shown = bar.get_metrics(trainer, method)
    assert shown["loss"] == pytest.approx(float(trainer.callback_metrics["loss"]))
    with pytest.raises(ValueError, match="metrics_every_s"):
        ProgressBar(metrics_every_s=-1)


class HostToDevice(TorchDispatchMode):
    """Records ops that bring host memory to the "device" (here the meta device): a copy from the CPU, or
    an op mixing CPU tensors (beyond 0-D scalars, which travel as arguments) with device tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        on_host = any(t.device.type == "cpu" and t.ndim > 0 for t in tensors)
        meta = torch.device("meta")
        to_device = any(t.device == meta for t in tensors) or kwargs.get("device") == meta
        if on_host and to_device:
            self.ops.append(str(func))
        return func(*args, **kwargs)


def loss_and_backward(method, batch: dict) -> None:
    method.compute_losses(batch)["loss"].backward()


@pytest.mark.parametrize("name", METHODS)
def test_a_training_step_on_the_meta_device_copies_nothing_from_the_host(name):
    """A CPU run cannot see host-to-device copies (everything is on the host); on the meta device any
    tensor the step takes from the host shows. Step tables are copied once: the second step copies none."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        method, batch = METHODS[name]()
        if isinstance(method, (LatentDiffusionSR, LatentI2SB)):
            method.compute_losses(batch)  # the latent scale, estimated once from the first batch on the CPU
    method = method.to("meta")
    batch = {key: value.to("meta") for key, value in batch.items()}
    loss_and_backward(method, batch)
    with HostToDevice() as copies:
        loss_and_backward(method, batch)
    assert copies.ops == []


def test_the_recorder_sees_a_host_table_looked_up_on_the_device():
    table, steps = torch.arange(10.0), torch.randint(10, (4,), device="meta")
    with HostToDevice() as copies:
        table[steps]
        table.to("meta")
    assert len(copies.ops) == 2


def test_the_latent_scale_is_read_once_and_again_after_a_state_dict_is_loaded():
    method, batch = METHODS["ldm sr"]()
    with pytest.warns(UserWarning, match="estimated s"):
        method.autoencoder.encode(batch["hr"])
    state = method.state_dict()
    (key,) = [key for key in state if key.startswith("autoencoder.") and key.endswith("latent_scale")]
    method.load_state_dict({**state, key: torch.zeros_like(state[key])})
    with pytest.warns(UserWarning, match="estimated s"):
        method.autoencoder.encode(batch["hr"])
