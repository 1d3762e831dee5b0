"""LPIPS v0.1 (Zhang et al. 2018) with weights from a local file: the `lpips` package's network, never its
download of the ImageNet backbone."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import lpips
import torch
from torch import nn

from lit_diffsr.errors import ConfigError
from lit_diffsr.metrics.image import to_unit_range
from lit_diffsr.metrics.weights import resolve_weight
from lit_diffsr.safe_load import load_tensors

LPIPS_WEIGHTS = {"alex": "lpips_alex", "vgg": "lpips_vgg"}  # backbone -> key in weights.WEIGHT_FILES
# lpips keeps torchvision's `features` layers under their own index, grouped in slices: net.slice2.3.weight
_BACKBONE_KEY = re.compile(r"^net\.slice\d+\.(\d+)\.(weight|bias)$")


def _check_net(net: str) -> str:
    if net not in LPIPS_WEIGHTS:
        raise ConfigError(f"LPIPS net must be one of {sorted(LPIPS_WEIGHTS)}, got {net!r}")
    return LPIPS_WEIGHTS[net]


def _untrained_lpips(net: str) -> lpips.LPIPS:
    """The LPIPS network with a random backbone and the v0.1 linear heads shipped in the lpips wheel."""
    with warnings.catch_warnings():  # torchvision's deprecation notice for lpips' `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)


def load_lpips(net: str = "alex", weights_path: str | Path | None = None) -> lpips.LPIPS:
    """LPIPS v0.1 with backbone `net` ('alex' or 'vgg'), every weight loaded from the full state_dict found by
    `resolve_weight` (config path, cache, ...); in eval mode, without gradients."""
    path = resolve_weight(_check_net(net), weights_path)
    model = _untrained_lpips(net)
    try:
        model.load_state_dict(load_tensors(path, what=f"LPIPS '{net}' weights"))
    except (RuntimeError, OSError) as error:
        raise ConfigError(f"{path} is not a full LPIPS v0.1 '{net}' state_dict: {error}") from error
    return model.eval().requires_grad_(False)


def torchvision_backbone_url(net: str) -> str:
    """Where torchvision publishes the ImageNet weights of LPIPS backbone `net`."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    _check_net(net)
    return {"alex": AlexNet_Weights.IMAGENET1K_V1, "vgg": VGG16_Weights.IMAGENET1K_V1}[net].url


def lpips_state_dict_from_backbone(net: str, backbone: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full LPIPS state_dict from a torchvision AlexNet/VGG-16 state_dict (`features.<i>.weight`...) and the
    linear heads of the lpips wheel."""
    _check_net(net)
    state = _untrained_lpips(net).state_dict()
    for key in state:
        match = _BACKBONE_KEY.match(key)
        if match:
            state[key] = backbone[f"features.{match[1]}.{match[2]}"].clone()
    return state


class PerceptualDistance(nn.Module):
    """LPIPS distance per image (Zhang et al. 2018, eq. 1): d(x, x0) = sum_l mean_hw ||w_l * (y_l - y0_l)||^2
    over unit-normalised backbone activations y_l. Images are NCHW in [-1, 1], as LPIPS expects."""

    def __init__(self, net: str = "alex", weights_path: str | Path | None = None):
        super().__init__()
        self.model = load_lpips(net, weights_path)

    @torch.no_grad()
    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.shape != target.shape or pred.dim() != 4:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must be equal NCHW")
        # LPIPS reads [-1, 1]; the unit-range check rejects images given in another range.
        pred = to_unit_range(pred, (-1.0, 1.0), "pred") * 2 - 1
        target = to_unit_range(target, (-1.0, 1.0), "target") * 2 - 1
        if pred.shape[1] == 1:  # greyscale: the backbone takes RGB
            pred, target = pred.expand(-1, 3, -1, -1), target.expand(-1, 3, -1, -1)
        dtype = next(self.model.parameters()).dtype
        try:
            return self.model(pred.to(dtype), target.to(dtype)).flatten().float()
        except RuntimeError as error:  # the backbone's pooling runs out of pixels on tiny images
            raise ValueError(f"LPIPS cannot score {tuple(pred.shape[-2:])} images: {error}") from error
