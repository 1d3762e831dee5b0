"""Every method trains under mixed precision with gradient clipping, and clipping acts as asked.

Lightning refuses to clip gradients for an optimiser that unscales them itself (the fused AdamW every
method uses) under its mixed-precision plugin; `DiffusionMethod.clip_gradients` takes that case over.
"""

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from tests.methods.test_host_syncs import METHODS


def fit(name: str, steps: int, precision: str, clip: float | None, optimizer_steps: list | None = None):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # untrained-autoencoder and Lightning's advice
        method, batch = METHODS[name]()
        if optimizer_steps is not None:
            record_gradient_norms(method, optimizer_steps)
        if precision == "16-mixed":  # the Trainer would run bf16 on a CPU: ask for fp16 with a loss scale
            options = {"plugins": [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]}
        else:
            options = {"precision": precision}
        trainer = L.Trainer(
            max_epochs=1, limit_train_batches=steps, accelerator="cpu", logger=False, **options,
            gradient_clip_val=clip if method.automatic_optimization else None,
            limit_val_batches=0, enable_checkpointing=False, enable_model_summary=False,
            enable_progress_bar=False,
        )
        trainer.fit(method, train_dataloaders=torch.utils.data.DataLoader([batch] * steps, batch_size=None))
    return trainer


def record_gradient_norms(method, norms: list) -> None:
    """Append the norm of the gradients each optimiser step applies (after clipping and unscaling)."""
    configure = method.configure_optimizers

    def configure_and_record():
        configured = configure()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        step = optimizer.step

        def recording_step(closure=None, **kwargs):
            if closure is not None:  # full precision: Lightning hands the step its forward and backward
                with torch.enable_grad():
                    closure()
            params = [p for group in optimizer.param_groups for p in group["params"]]
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()
            # Under fp16 GradScaler.step sets `grad_scale` when the fused step is still to unscale them.
            scale = getattr(optimizer, "grad_scale", None)
            norms.append(norm if scale is None else norm / scale.item())
            return step(**kwargs)

        optimizer.step = recording_step
        return configured

    method.configure_optimizers = configure_and_record


@pytest.mark.parametrize("name", METHODS)
def test_every_method_fits_in_bf16_mixed_precision_with_clipping(name):
    trainer = fit(name, 2, "bf16-mixed", clip=1.0)
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2
    assert torch.isfinite(trainer.callback_metrics["loss"])


@pytest.mark.parametrize("precision", ["32", "bf16-mixed", "16-mixed"])
def test_clipping_bounds_the_gradient_norm_the_optimiser_steps_with(precision):
    """Gradients of norm ~1 clipped to 1e-3. Under fp16 the loss is scaled by 2**16: gradients clipped
    while still scaled (not unscaled first) would reach the optimiser with norm 1e-3 / 2**16."""
    norms: list[float] = []
    fit("sr3", 3, precision, clip=1e-3, optimizer_steps=norms)
    assert len(norms) >= 2  # fp16's scaler may skip a first step with overflowing gradients
    for norm in norms:
        assert norm == pytest.approx(1e-3, rel=1e-2)
    unclipped: list[float] = []
    fit("sr3", 1, precision, clip=None, optimizer_steps=unclipped)
    assert unclipped[0] > 0.1
