"""Sinusoidal embeddings of (discrete or continuous) diffusion time."""

import math

import torch


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of ``t`` with ``[cos | sin]`` halves (Vaswani et al. 2017, §3.5).

    Args:
        t: (B,) steps; integer or float (continuous noise levels, SR3's sqrt(gamma)).
        dim: embedding width; odd widths are zero-padded by one column.
        max_period: longest period; frequencies are ``max_period ** (-i / (dim // 2))``.

    Returns:
        (B, dim) float32 embedding (float64 if ``t`` is float64).
    """
    if t.ndim != 1:
        raise ValueError(f"timestep_embedding: t must be 1-D (B,), got shape {tuple(t.shape)}")
    if dim < 2:
        raise ValueError(f"timestep_embedding: dim must be >= 2, got {dim}")
    half = dim // 2
    dtype = t.dtype if t.dtype == torch.float64 else torch.float32
    # omega_i = max_period^(-i / half), i = 0..half-1 (Vaswani et al. 2017, §3.5).
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        embedding = torch.nn.functional.pad(embedding, (0, 1))
    return embedding
