"""The I²SB process (Liu et al. 2023, "I²SB: Image-to-Image Schrödinger Bridge").

A Brownian bridge between a clean image x0 (t = 0) and a degraded image x1 (t = 1) with a symmetric
β schedule. Discrete steps are 0-indexed and inclusive: step n carries σ_n² = Σ_{k<=n} β_k, so step 0
is one step of noise away from x0 and step N-1 is one step away from x1 (the GUIDE's convention).
"""

from collections.abc import Callable

import torch

from lit_diffsr.diffusion.on_device import DeviceTables, precise_dtype
from lit_diffsr.diffusion.progress import report_step

Step = int | torch.Tensor  # a python int, or a (B,) LongTensor of per-example steps


def gaussian_product_coef(
    sigma1: torch.Tensor | float, sigma2: torch.Tensor | float
) -> tuple[torch.Tensor | float, torch.Tensor | float, torch.Tensor | float]:
    """N(x | a, σ1²) · N(x | b, σ2²) ∝ N(x | coef1 a + coef2 b, var)  (I²SB eq. 11).

    Returns:
        coef1 = σ2² / (σ1² + σ2²), coef2 = σ1² / (σ1² + σ2²), var = σ1² σ2² / (σ1² + σ2²).
    """
    denominator = sigma1**2 + sigma2**2
    return sigma2**2 / denominator, sigma1**2 / denominator, sigma1**2 * sigma2**2 / denominator


class SchrodingerBridge:
    """The I²SB bridge: schedule, marginal q(x_t | x0, x1), posterior step and sampler.

    Tables (float64, length N, cast to the data's dtype where used):
        betas:   β_n, sqrt-linear from β_min to β_max / N, first half mirrored onto the second.
        std_fwd: σ_n = sqrt(Σ_{k<=n} β_k), the std accumulated from x0 (I²SB eq. 11).
        std_bwd: σ̄_n = sqrt(Σ_{k>=n} β_k), the std accumulated from x1 (I²SB eq. 11).
        mu_x0, mu_x1, std_sb: the bridge marginal N(mu_x0 x0 + mu_x1 x1, std_sb²) (I²SB eq. 11).

    Args:
        n_steps: N, the number of discrete steps (I²SB's "interval").
        beta_max: β_max; the largest β is β_max / N, reached at the middle step.
        beta_min: β_min, the first (and last) β.
    """

    def __init__(self, n_steps: int = 1000, beta_max: float = 0.3, beta_min: float = 1e-4) -> None:
        if not isinstance(n_steps, int) or n_steps < 2:
            raise ValueError(f"SchrodingerBridge: n_steps must be an int >= 2, got {n_steps!r}")
        if not 0 < beta_min <= beta_max / n_steps:
            raise ValueError(
                f"SchrodingerBridge: need 0 < beta_min <= beta_max / n_steps, got beta_min={beta_min}, "
                f"beta_max={beta_max}, n_steps={n_steps}; raise beta_max or lower beta_min"
            )
        self.n_steps = n_steps
        # I²SB §4: symmetric β_t, small at both ends so that x0 and x1 are both sharp.
        ramp = torch.linspace(beta_min**0.5, (beta_max / n_steps) ** 0.5, n_steps, dtype=torch.float64) ** 2
        head = ramp[: (n_steps + 1) // 2]
        self.betas = torch.cat([head, head[: n_steps // 2].flip(0)])
        # I²SB eq. 11: σ_t² = ∫_0^t β, σ̄_t² = ∫_t^1 β.
        self.std_fwd = self.betas.cumsum(0).sqrt()
        self.std_bwd = self.betas.flip(0).cumsum(0).flip(0).sqrt()
        self.mu_x0, self.mu_x1, variance = gaussian_product_coef(self.std_fwd, self.std_bwd)
        self.std_sb = variance.sqrt()
        self._tables = DeviceTables()

    # ------------------------------------------------------------------ lookups
    def _lookup(self, table: str, step: Step, device: torch.device, name: str = "step") -> torch.Tensor:
        """Table `table` at `step` on `device`, float64 (0-D for an int step, (B,) for a tensor step).

        The tables are copied to each device once, and a tensor step's range is asserted on its device
        (`torch._assert_async`): a training step never reads its steps back to the host."""
        values = self._tables.get(table, getattr(self, table), device, precise_dtype(device))
        message = f"{name} must lie in [0, {self.n_steps - 1}]"
        if isinstance(step, torch.Tensor):
            if step.dtype.is_floating_point or step.dtype == torch.bool or step.ndim > 1:
                raise TypeError(f"{name} must be an int or an integer tensor of shape (B,), got {step!r}")
            torch._assert_async(((step >= 0) & (step < self.n_steps)).all(), message)
        elif isinstance(step, int):
            if not 0 <= step < self.n_steps:
                raise ValueError(f"{message}, got {step}")
        else:
            raise TypeError(f"{name} must be an int or an integer tensor of shape (B,), got {type(step)}")
        return values[step]

    @staticmethod
    def _broadcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Cast float64 per-step values to like's dtype/device, shaped (B, 1, ..., 1) to broadcast."""
        if values.ndim == 1:
            if values.shape[0] != like.shape[0]:
                raise ValueError(
                    f"step has {values.shape[0]} entries but the batch has {like.shape[0]}; "
                    "pass one step per example or a python int"
                )
            values = values.reshape(-1, *[1] * (like.ndim - 1))
        return values.to(dtype=like.dtype, device=like.device)

    def _at(self, table: str, step: Step, like: torch.Tensor) -> torch.Tensor:
        return self._broadcast(self._lookup(table, step, like.device), like)

    # ------------------------------------------------------------------ training
    def q_sample(
        self,
        step: Step,
        x0: torch.Tensor,
        x1: torch.Tensor,
        ot_ode: bool = False,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_t ~ q(x_t | x0, x1) = N(mu_x0 x0 + mu_x1 x1, std_sb² I)  (I²SB eq. 11).

        With ``ot_ode`` the noise is dropped (the OT-ODE limit, x_t = the bridge mean) and ``noise``
        is ignored; otherwise ``noise`` (default: fresh N(0, I)) scales by std_sb.
        """
        _check_same_shape(x0=x0, x1=x1)
        x_t = self._at("mu_x0", step, x0) * x0 + self._at("mu_x1", step, x0) * x1
        if ot_ode:
            return x_t
        noise = torch.randn_like(x0) if noise is None else noise
        _check_same_shape(x0=x0, noise=noise)
        return x_t + self._at("std_sb", step, x0) * noise

    def training_target(self, step: Step, x0: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """The network's regression label (x_t - x0) / σ_t  (I²SB Alg. 1, σ_t = std_fwd)."""
        _check_same_shape(x0=x0, x_t=x_t)
        return (x_t - x0) / self._at("std_fwd", step, x0)

    def predict_x0(
        self, step: Step, x_t: torch.Tensor, net_out: torch.Tensor, clip: float | None = None
    ) -> torch.Tensor:
        """x̂0 = x_t - σ_t ε(x_t, t), the inverse of ``training_target``; optionally clamped to ±clip."""
        _check_same_shape(x_t=x_t, net_out=net_out)
        x0 = x_t - self._at("std_fwd", step, x_t) * net_out
        return x0 if clip is None else x0.clamp(-clip, clip)

    # ------------------------------------------------------------------ sampling
    def p_posterior(
        self,
        nprev: Step,
        n: Step,
        x_n: torch.Tensor,
        x0: torch.Tensor,
        ot_ode: bool = False,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x_{n'} ~ p(x_{n'} | x_n, x0) for n' = nprev < n  (I²SB eq. 4).

        The Gaussian product of N(x | x0, σ_{n'}²) and N(x | x_n, α²) with α² = σ_n² - σ_{n'}², the
        variance accumulated between n' and n. ``ot_ode`` drops the noise (and ignores ``noise``).
        """
        _check_same_shape(x_n=x_n, x0=x0)
        std_prev = self._lookup("std_fwd", nprev, x_n.device, "nprev")
        std_n = self._lookup("std_fwd", n, x_n.device, "n")
        # σ_n increases with n, so nprev < n is σ_n > σ_nprev; tensors are checked on their device.
        if isinstance(nprev, int) and isinstance(n, int):
            if nprev >= n:
                raise ValueError(f"p_posterior: need nprev < n, got nprev={nprev}, n={n}")
        else:
            torch._assert_async((std_n > std_prev).all(), "p_posterior: need nprev < n")
        std_delta = (std_n**2 - std_prev**2).sqrt()  # α_n (I²SB eq. 4)
        coef_x0, coef_xn, variance = gaussian_product_coef(std_prev, std_delta)
        x_prev = self._broadcast(coef_x0, x0) * x0 + self._broadcast(coef_xn, x0) * x_n
        if ot_ode:
            return x_prev
        noise = torch.randn_like(x0) if noise is None else noise
        _check_same_shape(x0=x0, noise=noise)
        return x_prev + self._broadcast(variance.sqrt(), x0) * noise

    def sampling_steps(self, nfe: int) -> list[int]:
        """The nfe + 1 step indices, 0 and N-1 included, evenly spread (rounded half up).

        Index i is round(i (N-1) / nfe); nfe can go up to N-1, where every step is visited.
        """
        if not isinstance(nfe, int) or not 1 <= nfe <= self.n_steps - 1:
            raise ValueError(f"nfe must be an int in [1, {self.n_steps - 1}] (n_steps - 1), got {nfe!r}")
        # Integer arithmetic: floor((2 i (N-1) + nfe) / (2 nfe)) = round-half-up of i (N-1) / nfe.
        return [(2 * i * (self.n_steps - 1) + nfe) // (2 * nfe) for i in range(nfe + 1)]

    @torch.no_grad()
    def sample(
        self,
        x1: torch.Tensor,
        x0_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        nfe: int,
        ot_ode: bool = False,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
        x1_known: torch.Tensor | None = None,
        return_trajectory: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run the bridge backwards from x1 (step N-1) to step 0 with nfe posterior steps (I²SB Alg. 2).

        Each step predicts x̂0 = x0_fn(x_n, n) (n: (B,) LongTensor) and draws x_{n'} from
        ``p_posterior``; noise is added on every step but the last (none at all with ``ot_ode``).

        Inpainting: where ``mask`` == 1 (observed; mask broadcasts to x1, values 0/1), the state is
        replaced after every step by a draw of the bridge marginal with x0 = x1 = x1_known, i.e.
        x1_known + std_sb[n'] z (I²SB eq. 11), and by x1_known itself on the last step and with
        ``ot_ode``. ``x1_known`` defaults to x1.

        Returns:
            x at step 0, and with ``return_trajectory`` also the (nfe + 1, *x1.shape) stack of states
            from x1 to that result.
        """
        steps = self.sampling_steps(nfe)
        if mask is not None:
            x1_known = x1 if x1_known is None else x1_known
            _check_same_shape(x1=x1, x1_known=x1_known)
            if not _broadcasts_to(mask.shape, x1.shape):
                raise ValueError(f"mask of shape {tuple(mask.shape)} must broadcast to x1 {tuple(x1.shape)}")
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise ValueError("mask must hold only 0 (to generate) and 1 (observed)")
            observed = mask.bool()
        x = x1
        trajectory = [x1]
        pairs = list(zip(reversed(steps[:-1]), reversed(steps[1:]), strict=True))
        for done, (nprev, n) in enumerate(pairs, start=1):
            deterministic = ot_ode or nprev == steps[0]
            x0_hat = x0_fn(x, torch.full((x.shape[0],), n, dtype=torch.long, device=x.device))
            noise = None if deterministic else _randn_like(x, generator)
            x = self.p_posterior(nprev, n, x, x0_hat, ot_ode=deterministic, noise=noise)
            if mask is not None:
                known = x1_known
                if not deterministic:  # mu_x0 + mu_x1 = 1, so the marginal mean is x1_known itself
                    known = x1_known + self._at("std_sb", nprev, x1) * _randn_like(x1, generator)
                x = torch.where(observed, known, x)
            trajectory.append(x)
            report_step(done, len(pairs))
        return (x, torch.stack(trajectory)) if return_trajectory else x


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match, got {shapes}")
