"""Discrete-time Gaussian diffusion: forward process, posterior, parameterisations, losses, VLB.

Follows Ho et al. 2020 (DDPM) and Nichol & Dhariwal 2021 (improved DDPM). Steps are 0-indexed: index
t = 0 means one step of noise, t = T - 1 is the noisiest. Tables are float64 NumPy arrays; they are cast
to the device and dtype of the input when used (float32 for half-precision inputs, to keep 1/sqrt(abar)
representable).
"""

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from lit_diffsr.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from lit_diffsr.diffusion.on_device import DeviceTables, randn_on

PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large", "learned_range")
LOSSES = ("mse", "l1", "hybrid")

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""model_fn(x_t, model_t) -> raw network output; model_t = diffusion.timestep_map[t]."""


def space_timesteps(num_timesteps: int, section_counts: int | str | Sequence[int]) -> list[int]:
    """Steps of a T-step process to keep when respacing it (improved DDPM, Nichol & Dhariwal 2021 §4).

    Args:
        num_timesteps: T of the original process.
        section_counts: ``"ddimN"``: an integer stride giving exactly N steps (as DDIM, Song et al. 2021);
            ``250``, ``"250"`` or ``"10,15,20"``: one count or comma-separated counts, or a list. The T
            steps are split into len(counts) sections of near-equal size (the first ones get the
            remainder) and each section keeps its count of evenly strided steps, ends included.

    Returns:
        The sorted original indices to keep.
    """
    if isinstance(section_counts, int):  # `steps=100` on the command line arrives as an int
        section_counts = [section_counts]
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired = int(section_counts[len("ddim"):])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"section_counts={section_counts!r}: no integer stride gives exactly "
                             f"{desired} of {num_timesteps} steps; pick another count or use a plain count")
        try:
            section_counts = [int(count) for count in section_counts.split(",")]
        except ValueError as error:
            raise ValueError(f"section_counts={section_counts!r} must be 'ddimN', a count like '250' or "
                             "comma-separated counts like '10,15,20'") from error
    if not section_counts or any(count < 1 for count in section_counts):
        raise ValueError(f"section_counts must hold positive counts, got {section_counts!r}")

    base_size, extra = divmod(num_timesteps, len(section_counts))
    kept: list[int] = []
    section_start = 0
    for i, count in enumerate(section_counts):
        size = base_size + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"section_counts={section_counts!r}: cannot keep {count} steps of a "
                             f"section of {size} (T={num_timesteps})")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        kept.extend(section_start + round(stride * j) for j in range(count))
        section_start += size
    return sorted(set(kept))


def _masked_mean_flat(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-sample mean over the pixels where mask == 1 (all pixels when mask is None)."""
    if mask is None:
        return mean_flat(x)
    try:
        broadcasts = torch.broadcast_shapes(mask.shape, x.shape) == x.shape
    except RuntimeError:
        broadcasts = False
    if not broadcasts:
        raise ValueError(f"mask of shape {tuple(mask.shape)} must broadcast to {tuple(x.shape)}, "
                         "e.g. (B, 1, H, W) with 1 for pixels that count")
    mask = mask.to(x.dtype).expand_as(x)
    return (x * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp(min=1.0)


class GaussianDiffusion:
    """The process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) and its learned reverse p(x_{t-1}|x_t).

    Args:
        betas: beta_t for t = 0..T-1 (see ``schedules.get_beta_schedule``).
        prediction: what the network predicts: ``"eps"`` (Ho et al. 2020), ``"x0"``, or ``"v"`` =
            sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022).
        variance: Sigma of p(x_{t-1}|x_t): ``"fixed_small"`` (the posterior variance tilde-beta_t),
            ``"fixed_large"`` (beta_t), or ``"learned_range"`` (Nichol & Dhariwal 2021, eq. 15; the network
            outputs 2C channels, the last C being v in [-1, 1]).
        loss: ``"mse"`` or ``"l1"`` (L_simple on the prediction target), or ``"hybrid"`` = L_simple +
            lambda L_vlb (Nichol & Dhariwal 2021, eq. 16); hybrid goes with learned_range. None picks
            "hybrid" for learned_range and "mse" otherwise (convenient for sampling-only use).
        timestep_map: original step of each step of this process (respaced processes); the network is
            always called with the original step.
    """

    def __init__(self, betas: np.ndarray | Sequence[float], prediction: str = "eps",
                 variance: str = "fixed_small", loss: str | None = None,
                 timestep_map: Sequence[int] | torch.Tensor | None = None) -> None:
        if loss is None:
            loss = "hybrid" if variance == "learned_range" else "mse"
        for arg, value, choices in (("prediction", prediction, PREDICTIONS),
                                    ("variance", variance, VARIANCES), ("loss", loss, LOSSES)):
            if value not in choices:
                raise ValueError(f"GaussianDiffusion: {arg}={value!r} is not one of {choices}")
        if (variance == "learned_range") != (loss == "hybrid"):
            raise ValueError(f"GaussianDiffusion: variance={variance!r} with loss={loss!r}: a learned "
                             "variance is only trained by the VLB term, so use variance='learned_range' "
                             "together with loss='hybrid' (and fixed variances with 'mse' or 'l1')")
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0 or not np.all((betas > 0) & (betas <= 1)):
            raise ValueError("GaussianDiffusion: betas must be a non-empty 1-D array with values in (0, 1]")
        self.prediction, self.variance, self.loss = prediction, variance, loss
        self.num_timesteps = len(betas)

        self.betas = betas
        alphas = 1.0 - betas
        # abar_t = prod_{s <= t} alpha_s (Ho et al. 2020, eq. 4).
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, tilde-beta_t) (Ho et al. 2020, eqs. 6-7).
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # tilde-beta_0 = 0, so index 0 borrows tilde-beta_1 (beta_0 for a one-step process) to keep the
        # log finite; the decoder at t = 0 then has a sharp but finite scale.
        first_variance = self.posterior_variance[1] if self.num_timesteps > 1 else betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first_variance, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (
            1.0 - self.alphas_cumprod)
        self.log_betas = np.log(betas)
        # sigma_t^2 = beta_t (Ho et al. 2020, §3.2), with the same sharp first variance as above.
        self.fixed_large_variance = np.append(first_variance, betas[1:])
        self.fixed_large_log_variance = np.log(self.fixed_large_variance)

        if timestep_map is None:
            timestep_map = range(self.num_timesteps)
        self.timestep_map = torch.as_tensor(timestep_map, dtype=torch.long).cpu()
        if self.timestep_map.shape != (self.num_timesteps,):
            raise ValueError(f"GaussianDiffusion: timestep_map must hold {self.num_timesteps} steps, "
                             f"got shape {tuple(self.timestep_map.shape)}")
        self._tables = DeviceTables()

    def __repr__(self) -> str:
        return (f"GaussianDiffusion(T={self.num_timesteps}, prediction={self.prediction!r}, "
                f"variance={self.variance!r}, loss={self.loss!r})")

    # ----------------------------------------------------------------------------------- helpers
    def _extract(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at steps t, cast to like's device/dtype, shaped (B, 1, ..., 1) to broadcast."""
        if t.dtype not in (torch.int64, torch.int32) or t.ndim != 1 or len(t) != len(like):
            raise ValueError(f"t must be an integer tensor of shape ({len(like)},) (one step per sample), "
                             f"got dtype {t.dtype} and shape {tuple(t.shape)}")
        dtype = like.dtype if like.dtype == torch.float64 else torch.float32
        table = self._tables.get(name, getattr(self, name), like.device, dtype)
        # index_select: same result as table[t], several times faster for long index tensors.
        return table.index_select(0, t).reshape(-1, *([1] * (like.ndim - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original step the network sees for step t of this (possibly respaced) process."""
        return self._tables.get("timestep_map", self.timestep_map, t.device, torch.long)[t]

    def _split_output(self, model_output: torch.Tensor,
                      x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split the raw output into (prediction, variance values v or None)."""
        channels = x_t.shape[1]
        expected = 2 * channels if self.variance == "learned_range" else channels
        if model_output.shape[0] != x_t.shape[0] or model_output.shape[1] != expected:
            raise ValueError(f"model output has shape {tuple(model_output.shape)} but variance="
                             f"{self.variance!r} needs {expected} channels for x_t of shape "
                             f"{tuple(x_t.shape)} (learned_range: [prediction | v])")
        if self.variance == "learned_range":
            return model_output[:, :channels], model_output[:, channels:]
        return model_output, None

    # ------------------------------------------------------------------------- forward process
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (Ho et al. 2020, eq. 4)."""
        if noise is None:
            noise = torch.randn_like(x0)
        return (self._extract("sqrt_alphas_cumprod", t, x0) * x0
                + self._extract("sqrt_one_minus_alphas_cumprod", t, x0) * noise)

    def q_posterior_mean_variance(self, x0: torch.Tensor, x_t: torch.Tensor,
                                  t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, variance tilde-beta_t and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. eqs. 6-7).

        The variances are expanded to the shape of x_t.
        """
        mean = (self._extract("posterior_mean_coef1", t, x_t) * x0
                + self._extract("posterior_mean_coef2", t, x_t) * x_t)
        variance = self._extract("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------------ parameterisations
    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        # x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), Ho et al. 2020, eq. 4 solved for x_0.
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def predict_eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        # eps = (x_t / sqrt(abar_t) - x_0) / sqrt(1 / abar_t - 1), Ho et al. 2020, eq. 4 solved for eps.
        return (self._extract("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x0) / self._extract(
            "sqrt_recipm1_alphas_cumprod", t, x_t)

    def predict_v(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0, Salimans & Ho 2022, §4.
        return (self._extract("sqrt_alphas_cumprod", t, x0) * eps
                - self._extract("sqrt_one_minus_alphas_cumprod", t, x0) * x0)

    def predict_x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v, Salimans & Ho 2022, appendix D.
        return (self._extract("sqrt_alphas_cumprod", t, x_t) * x_t
                - self._extract("sqrt_one_minus_alphas_cumprod", t, x_t) * v)

    def predict_eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        # eps = sqrt(1 - abar_t) x_t + sqrt(abar_t) v, Salimans & Ho 2022, appendix D.
        return (self._extract("sqrt_one_minus_alphas_cumprod", t, x_t) * x_t
                + self._extract("sqrt_alphas_cumprod", t, x_t) * v)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output for x_t = q_sample(x0, t, noise): eps, x_0 or v."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        return self.predict_v(x0, noise, t)

    def _x0_and_eps(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                    clip_denoised: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(pred_x0, pred_eps) from the network's prediction; eps follows the clipped x_0 when clipping."""
        if self.prediction == "eps":
            pred_x0, pred_eps = self.predict_x0_from_eps(x_t, t, prediction), prediction
        elif self.prediction == "x0":
            pred_x0, pred_eps = prediction, None
        else:
            pred_x0, pred_eps = self.predict_x0_from_v(x_t, t, prediction), self.predict_eps_from_v(
                x_t, t, prediction)
        if clip_denoised:
            pred_x0, pred_eps = pred_x0.clamp(-1.0, 1.0), None
        if pred_eps is None:
            pred_eps = self.predict_eps_from_x0(x_t, t, pred_x0)
        return pred_x0, pred_eps

    # -------------------------------------------------------------------------- reverse process
    def p_mean_variance(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = True) -> dict[str, torch.Tensor]:
        """Parameters of p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) from the raw network output.

        mu_theta is the posterior mean at the predicted x_0 (Ho et al. 2020, eq. 7); with
        ``clip_denoised`` the predicted x_0 is clamped to [-1, 1] first.

        Returns:
            dict with ``mean``, ``variance``, ``log_variance`` (shape of x_t), ``pred_x0``, ``pred_eps``.
        """
        prediction, variance_values = self._split_output(model_output, x_t)
        if self.variance == "learned_range":
            min_log = self._extract("posterior_log_variance_clipped", t, x_t)
            max_log = self._extract("log_betas", t, x_t)
            fraction = (variance_values + 1.0) / 2.0
            # log Sigma = v log beta_t + (1 - v) log tilde-beta_t with v mapped to [0, 1] (N&D 2021, eq. 15).
            log_variance = fraction * max_log + (1.0 - fraction) * min_log
            variance = torch.exp(log_variance)
        elif self.variance == "fixed_small":
            variance = self._extract("posterior_variance", t, x_t).expand_as(x_t)
            log_variance = self._extract("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        else:
            variance = self._extract("fixed_large_variance", t, x_t).expand_as(x_t)
            log_variance = self._extract("fixed_large_log_variance", t, x_t).expand_as(x_t)
        pred_x0, pred_eps = self._x0_and_eps(prediction, x_t, t, clip_denoised)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_x0": pred_x0, "pred_eps": pred_eps}

    # ----------------------------------------------------------------------------------- losses
    def vb_terms_bpd(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor, clip_denoised: bool = False,
                     mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One term of the variational bound in bits/dim (Ho et al. 2020, eq. 5), per sample.

        L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0, and the discretized Gaussian
        decoder L_0 = -log p(x_0 | x_1) (eq. 13) at t = 0.

        Returns:
            dict with ``output`` (B,) and ``pred_x0``.
        """
        true_mean, _, true_log_variance = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised=clip_denoised)
        kl = normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])
        kl = _masked_mean_flat(kl, mask) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(
            x0, means=out["mean"], log_scales=0.5 * out["log_variance"])
        decoder_nll = _masked_mean_flat(decoder_nll, mask) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_x0": out["pred_x0"]}

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None,
                        mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-sample training loss at steps t (weight and average them yourself).

        L_simple = ||target - prediction||^2 (Ho et al. 2020, eq. 14) or its L1 version; with
        loss="hybrid", + lambda L_vlb where lambda = 0.001 and L_vlb ~ T L_t, so the VB term (bits/dim)
        is multiplied by T / 1000 and sees the prediction detached: it trains only Sigma_theta
        (Nichol & Dhariwal 2021, eq. 16 and §3.1).

        Args:
            model_fn: model_fn(x_t, model_t) -> raw output; called with ``self.timestep_map[t]``.
            x0: clean data (B, C, ...) in [-1, 1].
            t: (B,) steps of this process.
            noise: eps (drawn with randn_like when None).
            mask: broadcastable to x0, 1 for the pixels that count (masked mean per sample).

        Returns:
            dict of (B,) tensors: ``loss`` (what to minimise), ``mse`` (squared error of the prediction,
            reported for every loss type), ``vb`` (the scaled VB term; zeros unless hybrid).
        """
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        model_output = model_fn(x_t, self.model_timesteps(t))
        prediction, variance_values = self._split_output(model_output, x_t)
        error = prediction - self.training_target(x0, noise, t)
        mse = _masked_mean_flat(error**2, mask)
        simple = _masked_mean_flat(error.abs(), mask) if self.loss == "l1" else mse
        if self.loss == "hybrid":
            frozen_output = torch.cat([prediction.detach(), variance_values], dim=1)
            vb = self.vb_terms_bpd(frozen_output, x0, x_t, t, clip_denoised=False, mask=mask)["output"]
            vb = vb * (self.num_timesteps / 1000.0)  # lambda T with lambda = 0.001 (N&D 2021, §3.1).
        else:
            vb = torch.zeros_like(mse)
        return {"loss": simple + vb, "mse": mse, "vb": vb}

    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || N(0, I)) in bits/dim per sample: L_T of Ho et al. 2020, eq. 5."""
        last = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean = self._extract("sqrt_alphas_cumprod", last, x0) * x0
        log_variance = torch.log1p(-self._extract("alphas_cumprod", last, x0))
        kl = normal_kl(mean, log_variance.expand_as(x0), torch.zeros_like(x0), torch.zeros_like(x0))
        return mean_flat(kl) / math.log(2.0)

    @torch.no_grad()
    def nll_bpd(self, model_fn: ModelFn, x0: torch.Tensor, clip_denoised: bool = True,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The full variational bound -log p(x_0) <= L_T + sum_{t>1} L_{t-1} + L_0 in bits/dim.

        Ho et al. 2020, eq. 5: one network call per step, T calls in all.

        Returns:
            dict with ``total_bpd`` (B,), ``prior_bpd`` (B,), ``vb`` (B, T) the terms per step and
            ``mse`` (B, T) the squared error of the predicted eps per step.
        """
        vb_terms, eps_errors = [], []
        for step in range(self.num_timesteps):
            t = torch.full((x0.shape[0],), step, dtype=torch.long, device=x0.device)
            noise = randn_on(x0.shape, x0.device, generator, x0.dtype)
            x_t = self.q_sample(x0, t, noise)
            terms = self.vb_terms_bpd(model_fn(x_t, self.model_timesteps(t)), x0, x_t, t,
                                      clip_denoised=clip_denoised)
            vb_terms.append(terms["output"])
            eps_errors.append(mean_flat((self.predict_eps_from_x0(x_t, t, terms["pred_x0"]) - noise) ** 2))
        vb = torch.stack(vb_terms, dim=1)
        prior = self.prior_bpd(x0)
        return {"total_bpd": vb.sum(dim=1) + prior, "prior_bpd": prior, "vb": vb,
                "mse": torch.stack(eps_errors, dim=1)}

    # ------------------------------------------------------------------------------- respacing
    def respaced(self, section_counts: int | str | Sequence[int]) -> "GaussianDiffusion":
        """A process on a subset of the steps that keeps abar_t at the kept steps (Nichol & Dhariwal §4).

        New betas: beta'_i = 1 - abar_{k_i} / abar_{k_{i-1}} over the kept steps k (see ``space_timesteps``);
        ``timestep_map`` maps each new step to the original one the network was trained on.
        """
        kept = space_timesteps(self.num_timesteps, section_counts)
        kept_alphas_cumprod = self.alphas_cumprod[kept]
        betas = 1.0 - kept_alphas_cumprod / np.append(1.0, kept_alphas_cumprod[:-1])
        return GaussianDiffusion(betas, prediction=self.prediction, variance=self.variance, loss=self.loss,
                                 timestep_map=self.timestep_map[kept])
