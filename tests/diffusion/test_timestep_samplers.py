"""Uniform and loss-aware (importance) timestep samplers."""

import pytest
import torch

from lit_diffsr.diffusion import LossSecondMomentSampler, UniformSampler


def test_uniform_sampler() -> None:
    t, weights = UniformSampler(50).sample(5000, "cpu", torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() >= 0 and t.max() <= 49
    assert bool((weights == 1).all())
    counts = torch.bincount(t, minlength=50)
    # 100 expected per step, standard deviation ~9.9: 5 sigma bounds.
    assert counts.min() > 50 and counts.max() < 150
    again, _ = UniformSampler(50).sample(5000, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(t, again)


def warmed_up_sampler() -> LossSecondMomentSampler:
    sampler = LossSecondMomentSampler(4, history=2, uniform_prob=0.2)
    steps = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    sampler.update(steps, torch.tensor([1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]))
    return sampler


def test_loss_aware_sampler_is_uniform_until_every_step_has_its_history() -> None:
    sampler = LossSecondMomentSampler(4, history=2, uniform_prob=0.2)
    sampler.update(torch.tensor([0, 1, 2, 3, 0, 1, 2]), torch.ones(7))
    assert not sampler.is_warmed_up()
    torch.testing.assert_close(sampler.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))


def test_loss_aware_probabilities_and_unbiased_weights() -> None:
    sampler = warmed_up_sampler()
    # p_t ∝ sqrt(E[L_t^2]) = t + 1, mixed 80/20 with uniform (Nichol & Dhariwal 2021, §3.3).
    expected = 0.8 * torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) / 10 + 0.2 / 4
    torch.testing.assert_close(sampler.probabilities(), expected)
    t, weights = sampler.sample(4000, "cpu", torch.Generator().manual_seed(0))
    torch.testing.assert_close(weights, (1 / (4 * expected[t])).float())
    # E_{t~p}[w_t L_t] = mean_t L_t = 2.5 (eq. 18): holds only if t is really drawn from p.
    weighted = weights.double() * (t + 1).double()
    standard_error = weighted.std().item() / 4000**0.5
    assert abs(weighted.mean().item() - 2.5) < 4 * standard_error


def test_history_drops_the_oldest_loss() -> None:
    sampler = warmed_up_sampler()
    sampler.update(torch.tensor([3, 3]), torch.tensor([10.0, 20.0]))
    assert sampler.loss_history[3].tolist() == [10.0, 20.0]
    assert sampler.loss_history[0].tolist() == [1.0, 1.0]


def test_state_dict_round_trip_reproduces_sampling() -> None:
    sampler = warmed_up_sampler()
    restored = LossSecondMomentSampler(4, history=2, uniform_prob=0.2)
    restored.load_state_dict(sampler.state_dict())
    torch.testing.assert_close(restored.probabilities(), sampler.probabilities())
    first = sampler.sample(100, "cpu", torch.Generator().manual_seed(1))
    second = restored.sample(100, "cpu", torch.Generator().manual_seed(1))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    with pytest.raises(ValueError, match="loss_history"):
        LossSecondMomentSampler(5, history=2).load_state_dict(sampler.state_dict())


def test_update_checks_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        LossSecondMomentSampler(4).update(torch.tensor([0, 1]), torch.ones(3))
