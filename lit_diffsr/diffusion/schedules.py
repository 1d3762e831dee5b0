"""Noise schedules beta_1..beta_T, computed in float64 (cast where used)."""

import math

import numpy as np

BETA_SCHEDULES = ("linear", "cosine", "sqrt_linear", "linspace")


def _cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    # alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi/2), Nichol & Dhariwal 2021, eq. 17.
    def alpha_bar(fraction: np.ndarray) -> np.ndarray:
        return np.cos((fraction + s) / (1 + s) * math.pi / 2) ** 2

    steps = np.arange(num_timesteps, dtype=np.float64)
    # beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, clipped to avoid a singularity at t = T (eq. 17, §3.2).
    betas = 1.0 - alpha_bar((steps + 1) / num_timesteps) / alpha_bar(steps / num_timesteps)
    return np.minimum(betas, max_beta)


def get_beta_schedule(name: str, num_timesteps: int, **kwargs: float) -> np.ndarray:
    """Return the float64 betas beta_t, t = 0..T-1 (index 0 is the first noising step).

    Args:
        name: one of
            ``"linear"``: Ho et al. 2020's 1e-4..0.02 at T = 1000, rescaled by 1000/T so any T gives a
            similar process (Nichol & Dhariwal 2021, improved DDPM); no keyword arguments.
            ``"cosine"``: Nichol & Dhariwal 2021 eq. 17; keywords ``s`` (0.008), ``max_beta`` (0.999).
            ``"sqrt_linear"``: betas = linspace(sqrt(start), sqrt(end))**2, as latent diffusion (Rombach
            et al. 2022); keywords ``start`` (1e-4), ``end`` (2e-2).
            ``"linspace"``: betas = linspace(start, end), as SR3 (Saharia et al. 2022); keywords
            ``start`` (1e-4), ``end`` (2e-2).
        num_timesteps: T, the number of diffusion steps.
    """
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")
    allowed = {"linear": (), "cosine": ("s", "max_beta"), "sqrt_linear": ("start", "end"),
               "linspace": ("start", "end")}
    if name not in allowed:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {BETA_SCHEDULES}")
    unknown = set(kwargs) - set(allowed[name])
    if unknown:
        raise ValueError(f"beta schedule {name!r} got unknown keyword(s) {sorted(unknown)}; "
                         f"it accepts {list(allowed[name]) or 'none'}")

    if name == "linear":
        scale = 1000.0 / num_timesteps  # Nichol & Dhariwal 2021, improved-DDPM linear schedule for any T.
        betas = np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    elif name == "cosine":
        betas = _cosine_betas(num_timesteps, **kwargs)
    else:
        start, end = float(kwargs.get("start", 1e-4)), float(kwargs.get("end", 2e-2))
        if name == "sqrt_linear":  # Rombach et al. 2022 (LDM): linear in sqrt(beta).
            betas = np.linspace(start**0.5, end**0.5, num_timesteps, dtype=np.float64) ** 2
        else:  # Saharia et al. 2022 (SR3): linear in beta.
            betas = np.linspace(start, end, num_timesteps, dtype=np.float64)

    if not np.all((betas > 0) & (betas <= 1)):
        raise ValueError(f"beta schedule {name!r} with {kwargs} gives betas outside (0, 1]; "
                         "check start/end and num_timesteps")
    return betas
