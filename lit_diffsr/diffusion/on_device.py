"""Training steps that never wait for the GPU: draws happen on the device that uses them, per-step tables
are copied there once.

Moving a freshly drawn tensor or a looked-up table entry to the GPU (`.to(device)` from host memory), or
reading one back (`.cpu()`, `int(t.max())`), makes the host wait until every queued kernel has run, so it
cannot queue the next step meanwhile. tests/methods/test_host_syncs.py checks every method's step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def draw_device(device: torch.device | str, generator: torch.Generator | None) -> torch.device:
    """Where a random draw happens: on the generator's device when one is given (a seeded draw then gives
    the same numbers wherever the model runs), else on `device` itself."""
    return generator.device if generator is not None else torch.device(device)


def randn_on(shape: Sequence[int], device: torch.device | str, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` drawn where `draw_device` says, placed on `device`."""
    where = draw_device(device, generator)
    return torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


def precise_dtype(device: torch.device | str) -> torch.dtype:
    """float64 for step tables and level draws, except on MPS, which has no float64."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


class DeviceTables:
    """Named per-step tables (NumPy arrays or tensors), each copied once per (device, dtype) it is read on."""

    def __init__(self) -> None:
        self._copies: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def get(self, name: str, values: Any, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
        key = (name, torch.device(device), dtype)
        if key not in self._copies:
            self._copies[key] = torch.as_tensor(values).to(device=key[1], dtype=dtype)
        return self._copies[key]
