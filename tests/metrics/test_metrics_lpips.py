"""LPIPS plumbing with a randomly initialised backbone: loading from a local file, zero for identical images,
positive otherwise, per-image batching. No value of the metric itself is claimed (the weights are random)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from lit_diffsr.errors import ConfigError
from lit_diffsr.metrics.perceptual import PerceptualDistance, load_lpips, lpips_state_dict_from_backbone
from lit_diffsr.metrics.weights import MissingWeightError


@pytest.fixture(scope="module")
def distance(random_lpips_file) -> PerceptualDistance:
    return PerceptualDistance("alex", random_lpips_file)


def test_every_weight_comes_from_the_file(random_lpips_file, distance):
    saved = torch.load(random_lpips_file, weights_only=True)
    loaded = distance.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[key], loaded[key]) for key in saved)
    assert not distance.model.training and not any(p.requires_grad for p in distance.model.parameters())


def test_identical_images_are_zero_and_different_ones_positive(distance):
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 48, 48, generator=generator) * 2 - 1
    other = (images + 0.3 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    assert torch.equal(distance(images, images), torch.zeros(3))
    values = distance(images, other)
    assert values.shape == (3,) and (values > 0).all()
    singles = torch.cat([distance(a[None], b[None]) for a, b in zip(images, other, strict=True)])
    torch.testing.assert_close(values, singles, rtol=1e-5, atol=1e-7)  # float32 batched vs single convs
    grey = distance(images[:, :1], other[:, :1])  # one channel is repeated to RGB
    assert grey.shape == (3,) and (grey > 0).all()


def test_images_outside_minus_one_one_are_rejected(distance):
    with pytest.raises(ValueError, match="pred has values in"):
        distance(torch.full((1, 3, 32, 32), 200.0), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="LPIPS cannot score \\(8, 8\\) images"):
        distance(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_no_local_weights_is_the_clear_error_and_no_download():
    with pytest.raises(MissingWeightError, match="python -m lit_diffsr weights fetch"):
        load_lpips("alex")


def test_a_file_that_is_not_a_full_lpips_state_dict_is_rejected(random_lpips_file, tmp_path):
    heads_only = {
        k: v for k, v in torch.load(random_lpips_file, weights_only=True).items() if "slice" not in k
    }
    torch.save(heads_only, tmp_path / "heads_only.pth")
    with pytest.raises(ConfigError, match="heads_only.pth is not a full LPIPS v0.1 'alex' state_dict"):
        load_lpips("alex", tmp_path / "heads_only.pth")
    with pytest.raises(ConfigError, match="LPIPS net must be one of"):
        load_lpips("squeeze", random_lpips_file)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_state_dict_from_a_torchvision_backbone_keeps_its_layers(net):
    """What `weights fetch` builds from torchvision's ImageNet weights, checked on random weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        backbone = (torchvision.models.alexnet if net == "alex" else torchvision.models.vgg16)(weights=None)
    backbone_state = backbone.state_dict()
    state = lpips_state_dict_from_backbone(net, backbone_state)
    copied = [key for key in state if key.startswith("net.slice")]
    assert len(copied) == 2 * sum(isinstance(m, torch.nn.Conv2d) for m in backbone.features)
    for key in copied:
        index, kind = key.split(".")[-2:]
        assert torch.equal(state[key], backbone_state[f"features.{index}.{kind}"])
    assert any(key.startswith("lin0.") for key in state)  # the wheel's linear heads are in
