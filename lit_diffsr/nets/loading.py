"""Initialising a network from a weights file the user names (`model.init_from`): a lit_diffsr checkpoint or a
plain state_dict, read through `lit_diffsr.safe_load` (tensors only), checked against the network before
anything is copied."""

from __future__ import annotations

from pathlib import Path

import torch

from lit_diffsr.errors import ConfigError
from lit_diffsr.nets.adm_import import check_fits, fit_i2sb_init, pretrained_hint
from lit_diffsr.safe_load import load_tensors


def check_init_file(path: str | Path) -> Path:
    """`path` if it is a file, else a ConfigError (saying where to get published weights it names)."""
    path = Path(path)
    if not path.is_file():
        hint = pretrained_hint(path) or "pass a .ckpt or a state_dict .pt"
        raise ConfigError(f"model.init_from={str(path)!r} is not a file; {hint}")
    return path


def load_net_weights(net: torch.nn.Module, path: str | Path) -> None:
    """Copy weights into `net` from a lit_diffsr checkpoint (its EMA `state_dict`, keys `net.*`) or from a
    plain state_dict of the same network; a ConfigError lists missing, unexpected and mismatched keys.

    A checkpoint of an ADM network (`python -m lit_diffsr convert adm`) initialises as I²SB does from ADM:
    the variance channels of a learned-sigma output are dropped and, with cond_x1, the first convolution
    gets zero weights for x1's channels (`fit_i2sb_init`)."""
    path = check_init_file(path)
    checkpoint = load_tensors(path, what="model.init_from")
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConfigError(
            f"model.init_from={str(path)!r} is neither a lit_diffsr checkpoint nor a state_dict"
        )
    if all(key.startswith("net.") for key in state):  # a LightningModule's state_dict
        state = {key.removeprefix("net."): value for key, value in state.items()}
    state = fit_i2sb_init(state, net)
    check_fits(
        state, net, f"model.init_from={str(path)!r}",
        "make model.net match the checkpoint's architecture (channels, levels, cond_x1, learn_sigma)",
    )
    net.load_state_dict(state)
