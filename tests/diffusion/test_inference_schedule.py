"""SR3's inference schedule: its levels, its start, and the search that picks one at fixed NFE."""

import math

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import InferenceSchedule, candidate_schedules, search_schedule


def test_levels_are_the_square_root_of_the_cumulative_product_and_the_process_matches():
    schedule = InferenceSchedule(10, 1e-4, 0.2)
    expected = np.sqrt(np.cumprod(1 - np.linspace(1e-4, 0.2, 10)))
    np.testing.assert_allclose(schedule.levels().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(schedule.process().sqrt_alphas_cumprod, expected, rtol=1e-12)
    assert schedule.end_level == pytest.approx(expected[-1])
    assert InferenceSchedule.from_dict(schedule.to_dict()) == schedule


def test_start_from_noise_or_from_the_condition_noised_to_the_end_level():
    schedule = InferenceSchedule(5, 1e-3, 0.1, start="condition")
    condition, noise = torch.full((1, 3, 8, 8), 0.5), torch.randn(1, 3, 8, 8)
    level = schedule.end_level
    torch.testing.assert_close(
        schedule.initial_state(condition, noise), level * condition + math.sqrt(1 - level**2) * noise
    )
    noise_start = InferenceSchedule(5, 1e-3, 0.1, start="noise")
    assert noise_start.initial_state(condition, noise) is noise


@pytest.mark.parametrize(
    "values",
    [(0, 1e-4, 0.1, "noise"), (5, 0.2, 0.1, "noise"), (5, 1e-4, 1.0, "noise"), (5, 1e-4, 0.1, "lr")],
)
def test_invalid_schedules_are_refused(values):
    with pytest.raises(ValueError):
        InferenceSchedule(*values)
    with pytest.raises(ValueError, match="unknown"):
        InferenceSchedule.from_dict({"num_steps": 5, "beta_start": 1e-4, "beta_end": 0.1, "eta": 0})


def test_grid_keeps_ordered_pairs_only():
    grid = candidate_schedules(8, [1e-4, 0.05], [0.01, 0.1], ["noise"])
    assert [(s.beta_start, s.beta_end) for s in grid] == [(1e-4, 0.01), (1e-4, 0.1), (0.05, 0.1)]
    assert all(s.num_steps == 8 for s in grid)


def test_search_picks_the_highest_score_never_nan_and_the_first_of_ties():
    grid = candidate_schedules(6, [1e-5, 1e-3], [0.02, 0.1, 0.4], ["noise", "condition"])
    target = 0.5  # toy quality: best when the chain starts at sqrt(gamma_N) = 0.5 from the condition

    def score(schedule):
        return -abs(schedule.end_level - target) - (schedule.start == "noise")

    best, scored = search_schedule(grid, score)
    assert len(scored) == len(grid) and best.start == "condition"
    assert best.end_level == min((s.end_level for s in grid), key=lambda level: abs(level - target))
    best, _ = search_schedule(grid, lambda s: math.nan if s is grid[0] else 1.0)
    assert best is grid[1]  # a NaN never wins; of equal scores the earlier is kept
    with pytest.raises(ValueError):
        search_schedule([], score)
