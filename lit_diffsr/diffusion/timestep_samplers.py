"""Distributions over training steps t, with importance weights 1 / (T p_t) that keep the loss unbiased.

Under DDP every rank must hold the same sampler state: the caller all-gathers ``t`` and the per-sample
losses across ranks before ``LossSecondMomentSampler.update`` (e.g. with ``LightningModule.all_gather``)
and calls ``update`` with the gathered tensors on every rank.
"""

import torch

from lit_diffsr.diffusion.on_device import draw_device


class UniformSampler:
    """t ~ Uniform{0, ..., T-1}, all weights 1 (Ho et al. 2020, Alg. 1)."""

    def __init__(self, num_timesteps: int) -> None:
        if num_timesteps < 1:
            raise ValueError(f"UniformSampler: num_timesteps must be >= 1, got {num_timesteps}")
        self.num_timesteps = num_timesteps

    def probabilities(self) -> torch.Tensor:
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size: int, device: torch.device | str,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(t (B,) long, weights (B,) float) on ``device``, drawn there (or on the generator's device)."""
        where = draw_device(device, generator)
        t = torch.randint(self.num_timesteps, (batch_size,), generator=generator, device=where)
        return t.to(device), torch.ones(batch_size, device=device)


class LossSecondMomentSampler(UniformSampler):
    """Importance sampling p_t ∝ sqrt(E[L_t^2]) over the last ``history`` losses of each step.

    Nichol & Dhariwal 2021, §3.3 (eq. 18). Uniform until every step has ``history`` losses; afterwards
    mixed with ``uniform_prob`` of the uniform distribution so no step starves. The loss history is a
    float64 (T, history) buffer saved by ``state_dict`` so resumed runs continue with the same p.
    """

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        super().__init__(num_timesteps)
        if history < 1 or not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"LossSecondMomentSampler: need history >= 1 and 0 <= uniform_prob <= 1, "
                             f"got history={history}, uniform_prob={uniform_prob}")
        self.history, self.uniform_prob = history, uniform_prob
        self.loss_history = torch.zeros(num_timesteps, history, dtype=torch.float64)
        self.loss_counts = torch.zeros(num_timesteps, dtype=torch.long)

    def is_warmed_up(self) -> bool:
        return bool((self.loss_counts == self.history).all())

    def sample(self, batch_size: int, device: torch.device | str,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform until warmed up; then t ~ p and weights 1 / (T p_t), drawn on the host where the loss
        history lives (its `update` reads the losses back each step anyway, as improved-DDPM does)."""
        if not self.is_warmed_up():
            return super().sample(batch_size, device, generator)
        probabilities = self.probabilities().to(draw_device("cpu", generator))
        t = torch.multinomial(probabilities, batch_size, replacement=True, generator=generator)
        # E_{t~p}[L_t / (T p_t)] = E_{t~U}[L_t]: importance weights (Nichol & Dhariwal 2021, eq. 18).
        weights = 1.0 / (len(probabilities) * probabilities[t])
        return t.to(device), weights.float().to(device)

    def probabilities(self) -> torch.Tensor:
        if not self.is_warmed_up():
            return super().probabilities()
        # p_t ∝ sqrt(E[L_t^2]) (Nichol & Dhariwal 2021, §3.3), mixed with uniform.
        second_moment_root = torch.sqrt((self.loss_history**2).mean(dim=1))
        probabilities = second_moment_root / second_moment_root.sum()
        return probabilities * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses (B,) at steps t (B,); the oldest entry of a full step is dropped."""
        if t.shape != losses.shape or t.ndim != 1:
            raise ValueError(f"update: t and losses must both have shape (B,), got {tuple(t.shape)} and "
                             f"{tuple(losses.shape)}")
        for step, loss in zip(t.tolist(), losses.detach().double().cpu().tolist(), strict=True):
            count = int(self.loss_counts[step])
            if count == self.history:
                self.loss_history[step, :-1] = self.loss_history[step, 1:].clone()
                self.loss_history[step, -1] = loss
            else:
                self.loss_history[step, count] = loss
                self.loss_counts[step] = count + 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"loss_history": self.loss_history.clone(), "loss_counts": self.loss_counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {"loss_history": self.loss_history.shape, "loss_counts": self.loss_counts.shape}
        for key, shape in expected.items():
            if key not in state or tuple(state[key].shape) != tuple(shape):
                found = tuple(state[key].shape) if key in state else "missing"
                raise ValueError(f"LossSecondMomentSampler.load_state_dict: {key!r} must have shape "
                                 f"{tuple(shape)} (num_timesteps={self.num_timesteps}, history="
                                 f"{self.history}), got {found}; was it saved with other settings?")
        self.loss_history = state["loss_history"].to(torch.float64).cpu().clone()
        self.loss_counts = state["loss_counts"].to(torch.long).cpu().clone()
