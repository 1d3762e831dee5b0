"""Closed-form denoisers for Gaussian data: exact answers to test losses and samplers against.

Data x_0 ~ N(mu, diag(s^2)) per dimension. With x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps the marginal
is x_t ~ N(sqrt(abar) mu, V) with V = abar s^2 + 1 - abar, and (x_0, eps, x_t) are jointly Gaussian, so
the posterior means (the MSE-optimal predictors) are linear in x_t.
"""

import torch

from lit_diffsr.diffusion.gaussian_diffusion import ModelFn


class GaussianOracle:
    """Exact predictors for x_0 ~ N(mean, diag(std^2)).

    Args:
        mean, std: per-dimension mu and s, shaped like one sample without the batch dimension
            (e.g. (D,) or (C, H, W)); they broadcast against (B, ...) inputs.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.std = torch.as_tensor(std, dtype=torch.float64)
        if self.mean.shape != self.std.shape or not bool((self.std > 0).all()):
            raise ValueError(f"GaussianOracle: mean and std need one shape and std > 0, got shapes "
                             f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}")

    def _params(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.to(like), self.std.to(like)

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw (num_samples, ...) float64 data samples."""
        noise = torch.randn((num_samples, *self.mean.shape), generator=generator, dtype=torch.float64)
        return self.mean + self.std * noise

    def marginal_variance(self, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """V = abar s^2 + 1 - abar, the per-dimension variance of x_t."""
        alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
        return alpha_bar * self.std**2 + 1.0 - alpha_bar

    def eps(self, x_t: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """E[eps | x_t] = sqrt(1 - abar) (x_t - sqrt(abar) mu) / V."""
        mean, std = self._params(x_t)
        alpha_bar = torch.as_tensor(alpha_bar).to(x_t)
        variance = alpha_bar * std**2 + 1.0 - alpha_bar
        return torch.sqrt(1.0 - alpha_bar) * (x_t - torch.sqrt(alpha_bar) * mean) / variance

    def x0(self, x_t: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """E[x_0 | x_t] = mu + sqrt(abar) s^2 (x_t - sqrt(abar) mu) / V."""
        mean, std = self._params(x_t)
        alpha_bar = torch.as_tensor(alpha_bar).to(x_t)
        variance = alpha_bar * std**2 + 1.0 - alpha_bar
        return mean + torch.sqrt(alpha_bar) * std**2 * (x_t - torch.sqrt(alpha_bar) * mean) / variance

    def eps_mse_floor(self, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """E[Var(eps | x_t)] = 1 - (1 - abar) / V per dimension: the least achievable L_simple."""
        alpha_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
        return 1.0 - (1.0 - alpha_bar) / self.marginal_variance(alpha_bar)

    def probability_flow(self, x: torch.Tensor, alpha_bar_from: float, alpha_bar_to: float) -> torch.Tensor:
        """Exact transport of x from noise level abar_from to abar_to along the probability-flow ODE.

        For Gaussian data the ODE keeps the standardised coordinate (x_t - sqrt(abar) mu) / sqrt(V)
        fixed (Song et al. 2021, score SDE, eq. 13), so the map is affine. DDIM with eta = 0 (Song, Meng
        & Ermon 2021, eq. 12) is a discretisation of it and converges to it as the step count grows.
        """
        mean, _ = self._params(x)
        standardised = (x - alpha_bar_from**0.5 * mean) / self.marginal_variance(alpha_bar_from).to(x).sqrt()
        return alpha_bar_to**0.5 * mean + self.marginal_variance(alpha_bar_to).to(x).sqrt() * standardised

    def model_fn(self, alphas_cumprod: torch.Tensor, prediction: str = "eps") -> ModelFn:
        """A network stand-in model_fn(x_t, model_t) predicting eps, x0 or v exactly.

        Args:
            alphas_cumprod: abar of the ORIGINAL process, indexed by model_t (which is
                ``timestep_map[t]`` for respaced processes).
            prediction: ``"eps"``, ``"x0"`` or ``"v"`` (v = sqrt(abar) eps - sqrt(1 - abar) x_0,
                Salimans & Ho 2022, §4).
        """
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"GaussianOracle.model_fn: prediction={prediction!r} is not eps, x0 or v")
        table = torch.as_tensor(alphas_cumprod, dtype=torch.float64)

        def predict(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
            alpha_bar = table.to(x_t)[model_t.long().to(x_t.device)].reshape(-1, *([1] * (x_t.ndim - 1)))
            if prediction == "eps":
                return self.eps(x_t, alpha_bar)
            if prediction == "x0":
                return self.x0(x_t, alpha_bar)
            eps, x0 = self.eps(x_t, alpha_bar), self.x0(x_t, alpha_bar)
            return alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * x0

        return predict
