"""SR3's inference noise schedule: a sampling schedule of its own, chosen by a small search at fixed NFE.

A model conditioned on the continuous noise level sqrt(gamma) (``noise_level.ContinuousNoiseLevel``) can be
sampled with any schedule, not only with its training one (Chen et al. 2021, WaveGrad §3-4: trained with
T = 1000, sampled with 6 iterations whose betas were found by a grid search; Saharia et al. 2022, SR3 §4:
trained with T = 2000, linear 1e-6..1e-2, sampled with 100 steps, linear 1e-4..0.1, "after a hyper-parameter
search over inference noise schedules").

An ``InferenceSchedule`` is N linear betas (the family both papers search) and where the chain starts:
- ``start="noise"``: y_N ~ N(0, I), the papers' Alg. 2; exact only when gamma_N ~ 0;
- ``start="condition"``: y_N = sqrt(gamma_N) c + sqrt(1 - gamma_N) eps with c = upsample(lr), i.e.
  q(y_N | y_0 = c) (SR3 eq. 5 with the condition in place of the unknown y_0). The colours and every other
  low frequency of the upsampled image equal the target's, so a chain that ends at a moderate gamma_N
  inherits them instead of deciding them at the high-noise end, where an eps-predicting net is least
  accurate (its x_0 error is the eps error divided by sqrt(gamma); see benchmarks/README.md). With
  gamma_N -> 0 both starts agree.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch

from lit_diffsr.diffusion.gaussian_diffusion import GaussianDiffusion

STARTS = ("noise", "condition")


@dataclass(frozen=True)
class InferenceSchedule:
    """N linearly spaced betas beta_start..beta_end, and the chain's start (see the module docstring)."""

    num_steps: int
    beta_start: float
    beta_end: float
    start: str = "noise"

    def __post_init__(self) -> None:
        if not (isinstance(self.num_steps, int) and self.num_steps >= 1):
            raise ValueError(f"InferenceSchedule: num_steps={self.num_steps!r} must be an integer >= 1")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(
                f"InferenceSchedule: betas {self.beta_start}..{self.beta_end} must satisfy "
                "0 < beta_start <= beta_end < 1"
            )
        if self.start not in STARTS:
            raise ValueError(f"InferenceSchedule: start={self.start!r} is not one of {STARTS}")

    @classmethod
    def from_dict(cls, values: Mapping) -> InferenceSchedule:
        unknown = set(values) - {"num_steps", "beta_start", "beta_end", "start"}
        if unknown:
            raise ValueError(f"InferenceSchedule: unknown key(s) {sorted(unknown)}")
        return cls(
            int(values["num_steps"]),
            float(values["beta_start"]),
            float(values["beta_end"]),
            str(values.get("start", "noise")),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def betas(self) -> np.ndarray:
        return np.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=np.float64)

    def process(self, variance: str = "fixed_large") -> GaussianDiffusion:
        """The N-step process the sampler runs; its model step n indexes `levels()` (SR3 Alg. 2)."""
        return GaussianDiffusion(self.betas(), prediction="eps", variance=variance, loss="mse")

    def levels(self) -> torch.Tensor:
        """sqrt(gamma_n), n = 0..N-1, float64: the net's noise-level input at each step (WaveGrad §3)."""
        return torch.from_numpy(np.sqrt(np.cumprod(1.0 - self.betas())))

    @property
    def end_level(self) -> float:
        """sqrt(gamma_N) of the first (noisiest) step: how much signal the start y_N holds."""
        return float(self.levels()[-1])

    def initial_state(self, condition: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """y_N from standard normal `noise` (and the upsampled `condition` for start="condition")."""
        if self.start == "noise":
            return noise
        level = self.end_level
        return level * condition + math.sqrt(1.0 - level**2) * noise  # SR3 eq. 5 at y_0 = c


def candidate_schedules(
    num_steps: int,
    beta_starts: Iterable[float],
    beta_ends: Iterable[float],
    starts: Iterable[str] = STARTS,
) -> list[InferenceSchedule]:
    """The grid WaveGrad §4 searches: every (beta_start, beta_end, start) with beta_start <= beta_end."""
    return [
        InferenceSchedule(num_steps, low, high, start)
        for low, high, start in itertools.product(beta_starts, beta_ends, starts)
        if low <= high
    ]


def search_schedule(
    candidates: Iterable[InferenceSchedule], score: Callable[[InferenceSchedule], float]
) -> tuple[InferenceSchedule, list[tuple[InferenceSchedule, float]]]:
    """The candidate with the highest `score` (e.g. PSNR on held-out pairs), and every (candidate, score).

    Ties keep the earlier candidate; a NaN score never wins."""
    scored = [(candidate, float(score(candidate))) for candidate in candidates]
    if not scored:
        raise ValueError("search_schedule: no candidate schedules")
    best = max(scored, key=lambda pair: -math.inf if math.isnan(pair[1]) else pair[1])
    return best[0], scored
