"""Classifier-free guidance (Ho & Salimans 2022): one network, conditional and unconditional."""

from collections.abc import Callable, Mapping

import torch

from lit_diffsr.diffusion.gaussian_diffusion import ModelFn
from lit_diffsr.diffusion.on_device import draw_device

NetFn = Callable[..., torch.Tensor]
"""net_fn(x_t, model_t, y, **shared_kwargs) -> raw network output."""


def drop_labels(y: torch.Tensor, null_label: int, prob: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_label`` with probability ``prob`` (training-time dropout, p_uncond).

    Ho & Salimans 2022, Alg. 1: the same network learns the unconditional model on the dropped labels.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"drop_labels: prob must lie in [0, 1], got {prob}")
    where = draw_device(y.device, generator)
    dropped = torch.rand(y.shape, generator=generator, device=where).to(y.device) < prob
    return torch.where(dropped, torch.full_like(y, null_label), y)


def classifier_free_guidance(net_fn: NetFn, y: torch.Tensor, null_label: int, scale: float,
                             shared_kwargs: Mapping[str, torch.Tensor] | None = None) -> ModelFn:
    """A model_fn(x_t, model_t) that returns the guided output.

    eps_guided = eps_uncond + scale (eps_cond - eps_uncond), i.e. Ho & Salimans 2022 eq. 6 with
    scale = 1 + w. Both halves run in one doubled batch. Only the first C channels (C = channels of x_t:
    the eps / x0 / v prediction) are guided; any further channels (learned-range variance values) come
    from the conditional half. ``scale == 1`` is a single conditional pass.

    Args:
        net_fn: net_fn(x_t, model_t, y, **shared_kwargs) -> raw output.
        y: (B,) class labels.
        null_label: the label that means "no class" (the one ``drop_labels`` trains).
        scale: guidance scale; 1 = conditional, 0 = unconditional, > 1 = stronger guidance.
        shared_kwargs: other per-sample conditioning tensors (e.g. ``lr``); repeated for the doubled batch.
    """
    shared_kwargs = dict(shared_kwargs or {})

    def conditional(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        return net_fn(x_t, model_t, y, **shared_kwargs)

    if scale == 1.0:
        return conditional

    doubled_kwargs = {name: torch.cat([value, value]) for name, value in shared_kwargs.items()}
    doubled_y = torch.cat([y, torch.full_like(y, null_label)])

    def guided(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        output = net_fn(torch.cat([x_t, x_t]), torch.cat([model_t, model_t]), doubled_y, **doubled_kwargs)
        cond, uncond = output.chunk(2)
        channels = x_t.shape[1]
        # Ho & Salimans 2022, eq. 6 with scale = 1 + w, on the prediction channels only.
        guided_prediction = uncond[:, :channels] + scale * (cond[:, :channels] - uncond[:, :channels])
        return torch.cat([guided_prediction, cond[:, channels:]], dim=1)

    return guided
