"""Loading files a user points the project at, none of which is trusted to run code.

`torch.load(weights_only=True)` unpickles tensors and plain containers only; a file that holds anything
else (a pickled object whose loading would call a function) is refused with one line naming the file.
`load_pickled_arrays` does the same for the plain pickles some datasets ship (CIFAR-10's batches): NumPy
arrays, bytes, strings and containers, nothing that can name a function to call."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from lit_diffsr.errors import ConfigError, UntrustedFileError

REFUSAL_HINT = (
    "lit_diffsr loads tensors and plain containers only (torch.load weights_only=True); if you made this "
    "file yourself, re-save its tensors, e.g. torch.save(model.state_dict(), path)"
)


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_tensors(path: str | Path, *, what: str, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`; `what` names the config key or argument the path came from,
    so every refusal says which input to fix."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what}: no file at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise UntrustedFileError(
            f"{what}: refused {path}: it holds Python objects that would run code when loaded "
            f"({first_line(error)}). {REFUSAL_HINT}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ConfigError(f"{what}: {path} is not a readable PyTorch file ({first_line(error)})") from None


# Everything a NumPy array's pickle refers to, and nothing that runs other code.
PICKLE_ALLOW_LIST = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 pickles the bytes of a Python 2 pickle
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PICKLE_ALLOW_LIST:
            raise pickle.UnpicklingError(f"{module}.{name} is not an array type")
        return super().find_class(module, name)


def load_pickled_arrays(path: str | Path, *, what: str, encoding: str = "bytes") -> Any:
    """Unpickle a file of NumPy arrays and plain containers; any other global in it is refused."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return _ArrayUnpickler(file, encoding=encoding).load()
    except pickle.UnpicklingError as error:
        raise UntrustedFileError(
            f"{what}: refused {path}: it names {first_line(error)}, which would run code when loaded; "
            "expected a pickle of arrays and plain containers"
        ) from None
    except (EOFError, OSError, ValueError) as error:
        raise ConfigError(f"{what}: {path} is not a readable pickle ({first_line(error)})") from None
