"""Sampler mechanics: truncation, reproducibility, original steps for the network, clipping, errors."""

import pytest
import torch

from lit_diffsr.diffusion import (
    GaussianDiffusion,
    GaussianOracle,
    get_beta_schedule,
    sample_ancestral,
    sample_ddim,
)

torch.set_num_threads(1)

BASE = GaussianDiffusion(get_beta_schedule("cosine", 1000))
PROCESS = BASE.respaced("ddim20")  # steps 0..19 <-> original 0, 50, ..., 950
ORACLE = GaussianOracle(torch.tensor([0.2, -0.3]), torch.tensor([0.5, 0.3]))
MODEL_FN = ORACLE.model_fn(torch.from_numpy(BASE.alphas_cumprod))
SHAPE = (256, 2)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("sampler", "kwargs"), [(sample_ancestral, {}), (sample_ddim, {"eta": 0.0}),
                                                 (sample_ddim, {"eta": 1.0})])
def test_stopping_then_resuming_equals_the_full_chain(sampler, kwargs: dict) -> None:
    full = sampler(PROCESS, MODEL_FN, SHAPE, generator=seeded(), **kwargs)
    generator = seeded()
    x_s = sampler(PROCESS, MODEL_FN, SHAPE, generator=generator, stop_step=7, **kwargs)
    resumed = sampler(PROCESS, MODEL_FN, x_s, generator=generator, start_step=7, **kwargs)
    torch.testing.assert_close(resumed, full, rtol=0, atol=0)


def test_truncated_chain_returns_x_s_at_its_noise_level() -> None:
    start = torch.randn(SHAPE, generator=seeded(3), dtype=torch.float64)
    x_s = sample_ddim(PROCESS, MODEL_FN, start, stop_step=10, clip_denoised=False)

    def distance_to_flow_at(step: int) -> float:
        # Deterministic DDIM follows the probability flow, so x_s must sit at abar of (respaced) step s.
        exact = ORACLE.probability_flow(start, float(PROCESS.alphas_cumprod[-1]),
                                        float(PROCESS.alphas_cumprod[step]))
        return (x_s - exact).pow(2).mean().sqrt().item()

    # Measured: 0.006 at step 10 (20-step discretisation), 0.041 / 0.049 at the off-by-one levels.
    assert distance_to_flow_at(10) < 0.015
    assert distance_to_flow_at(9) > 0.03 and distance_to_flow_at(11) > 0.03


def test_network_sees_original_steps_in_descending_order() -> None:
    seen = []

    def recording_model(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        seen.append(model_t.tolist())
        return torch.zeros_like(x_t)

    _, trajectory = sample_ddim(PROCESS, recording_model, (3, 2), return_trajectory=True)
    assert seen == [[step] * 3 for step in range(950, -1, -50)]
    assert len(trajectory) == 21  # the start and one state per step
    seen.clear()
    sample_ancestral(PROCESS, recording_model, torch.zeros(3, 2), start_step=12, stop_step=9)
    assert seen == [[600] * 3, [550] * 3, [500] * 3]


def test_generator_makes_runs_reproducible() -> None:
    first = sample_ancestral(PROCESS, MODEL_FN, SHAPE, generator=seeded(5))
    again = sample_ancestral(PROCESS, MODEL_FN, SHAPE, generator=seeded(5))
    other = sample_ancestral(PROCESS, MODEL_FN, SHAPE, generator=seeded(6))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first - other).abs().max() > 0.1
    deterministic = sample_ddim(PROCESS, MODEL_FN, torch.randn(SHAPE, generator=seeded(1)), eta=0.0)
    stochastic = sample_ddim(PROCESS, MODEL_FN, torch.randn(SHAPE, generator=seeded(1)), eta=1.0,
                             generator=seeded(2))
    assert (deterministic - stochastic).abs().max() > 0.1


@pytest.mark.parametrize("sampler", [sample_ancestral, sample_ddim])
def test_clip_denoised_keeps_the_output_in_range(sampler) -> None:
    def overshooting_model(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        return -10 * x_t  # predicted x_0 far outside [-1, 1]

    clipped = sampler(PROCESS, overshooting_model, SHAPE, generator=seeded())
    unclipped = sampler(PROCESS, overshooting_model, SHAPE, generator=seeded(), clip_denoised=False)
    assert clipped.abs().max() <= 1.0 and unclipped.abs().max() > 2.0


def test_bad_truncation_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="start_step"):
        sample_ddim(PROCESS, MODEL_FN, torch.zeros(SHAPE), start_step=20)
    with pytest.raises(ValueError, match="stop_step"):
        sample_ddim(PROCESS, MODEL_FN, torch.zeros(SHAPE), start_step=5, stop_step=5)
    with pytest.raises(ValueError, match="pass that tensor"):
        sample_ancestral(PROCESS, MODEL_FN, SHAPE, start_step=5)
    with pytest.raises(ValueError, match="eta"):
        sample_ddim(PROCESS, MODEL_FN, SHAPE, eta=-0.1)
