"""Loading files a user points the project at, none of which is trusted to run code.

(The checkpoint-trust work ships a fuller module of this name with the same `load_tensors`; when both are
merged, its version is the one to keep.)"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lit_diffsr.errors import ConfigError


def load_tensors(path: str | Path, *, what: str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`; a file that holds anything but tensors and plain containers
    is refused in one line naming `what` (the config key or argument the path came from)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: no file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"{what}: refused {path}: it holds Python objects that would run code when loaded "
            f"({reason[:200]}); lit_diffsr loads tensors and plain containers only "
            "(torch.load weights_only=True)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ConfigError(f"{what}: {path} is not a readable PyTorch file ({error})") from None
