"""Classifier-free guidance and label dropout."""

import pytest
import torch

from lit_diffsr.diffusion import classifier_free_guidance, drop_labels

NULL = 10


class RecordingNet:
    """net_fn(x, t, y, lr) = [x + y + lr | 2 y] so each half's label shows in the output."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def __call__(self, x_t: torch.Tensor, model_t: torch.Tensor, y: torch.Tensor,
                 lr: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(len(x_t))
        label = y.float().view(-1, 1, 1, 1)
        return torch.cat([x_t + label + lr, 2 * label.expand_as(x_t)], dim=1)


X_T = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
T = torch.tensor([5, 5, 5])
Y = torch.tensor([1, 2, 3])
LOW_RES = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))


def test_scale_one_is_a_single_conditional_pass() -> None:
    net = RecordingNet()
    output = classifier_free_guidance(net, Y, NULL, 1.0, shared_kwargs={"lr": LOW_RES})(X_T, T)
    torch.testing.assert_close(output, net(X_T, T, Y, LOW_RES))
    assert net.batch_sizes == [3, 3]  # the guided call, then the direct one


@pytest.mark.parametrize("scale", [0.0, 3.0])
def test_guidance_doubles_the_batch_and_guides_prediction_channels_only(scale: float) -> None:
    net = RecordingNet()
    output = classifier_free_guidance(net, Y, NULL, scale, shared_kwargs={"lr": LOW_RES})(X_T, T)
    assert net.batch_sizes == [6]
    conditional, unconditional = net(X_T, T, Y, LOW_RES), net(X_T, T, torch.full_like(Y, NULL), LOW_RES)
    # Ho & Salimans 2022, eq. 6 with scale = 1 + w.
    expected = unconditional[:, :2] + scale * (conditional[:, :2] - unconditional[:, :2])
    torch.testing.assert_close(output[:, :2], expected)
    torch.testing.assert_close(output[:, 2:], conditional[:, 2:])  # variance channels: conditional half


def test_drop_labels() -> None:
    labels = torch.arange(1000) % 7
    assert torch.equal(drop_labels(labels, NULL, 0.0), labels)
    assert bool((drop_labels(labels, NULL, 1.0) == NULL).all())
    dropped = drop_labels(labels, NULL, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(dropped, drop_labels(labels, NULL, 0.2, torch.Generator().manual_seed(0)))
    kept = dropped != NULL
    assert torch.equal(dropped[kept], labels[kept])
    # 1000 Bernoulli(0.2) draws: mean 200, standard deviation 12.6; 4 sigma is ~50.
    assert abs((~kept).sum().item() - 200) < 50
    with pytest.raises(ValueError, match="prob"):
        drop_labels(labels, NULL, 1.5)
