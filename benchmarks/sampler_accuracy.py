"""Sampler accuracy against NFE on the Gaussian oracle (exact denoiser): a table and a PNG plot.

Data x_0 ~ N(mu, diag(s^2)) in 8 dimensions; the network is `GaussianOracle` (the exact E[eps | x_t]), so
every error is the sampler's own. Everything is linear, so the output covariance is computed exactly, not
by Monte Carlo: a deterministic sampler (DDIM eta = 0, DPM-Solver++(2M)) is an affine map x_0 = a x_T + b
per dimension, read off its outputs at x_T = 0 and 1; the DDPM ancestral chain x_{t-1} = m_t x_t + c_t +
sigma_t z propagates Var(x_{t-1}) = m_t^2 Var(x_t) + sigma_t^2 (Ho et al. 2020, Alg. 2, with the fixed-small
sigma_t^2 = tilde-beta_t). x_T starts from its exact marginal N(sqrt(abar_T) mu, V_T), so there is no prior
mismatch. Error = ||Sigma_hat - Sigma||_F / ||Sigma||_F (relative covariance error).

Two step spacings: "uniform" (evenly spaced steps, `GaussianDiffusion.respaced("N")`, what `sampler.steps:
"N"` gives) and "quadratic" (DDIM's t_i ~ c i^2, `quadratic_respacing`).

    python -m benchmarks.sampler_accuracy [--schedule linear] [--std-min 0.75 --std-max 1.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.common import RESULTS_DIR, load_average, markdown_table, write_results
from lit_diffsr.diffusion import (
    GaussianDiffusion,
    GaussianOracle,
    get_beta_schedule,
    quadratic_respacing,
    sample_ddim,
    sample_dpm_solver_pp,
)

NFES = (5, 10, 20, 50, 100, 1000)
SAMPLERS = ("DDPM", "DDIM", "DPM-Solver++(2M)")


def ancestral_variance(process: GaussianDiffusion, oracle: GaussianOracle, model_fn) -> torch.Tensor:
    """Exact Var(x_0) of the ancestral chain: Var <- m_t^2 Var + sigma_t^2 (no noise at the last step)."""
    variance = oracle.marginal_variance(float(process.alphas_cumprod[-1]))
    probes = torch.stack([torch.zeros_like(oracle.mean), torch.ones_like(oracle.mean)])
    for step in reversed(range(process.num_timesteps)):
        t = torch.full((2,), step, dtype=torch.long)
        out = process.p_mean_variance(model_fn(probes, process.model_timesteps(t)), probes, t, False)
        slope = out["mean"][1] - out["mean"][0]  # the posterior mean is affine in x_t
        variance = slope**2 * variance + (out["variance"][0] if step > 0 else 0.0)
    return variance


def deterministic_variance(
    sampler, process: GaussianDiffusion, oracle: GaussianOracle, model_fn
) -> torch.Tensor:
    probes = torch.stack([torch.zeros_like(oracle.mean), torch.ones_like(oracle.mean)])
    out = sampler(process, model_fn, probes, clip_denoised=False)
    return (out[1] - out[0]) ** 2 * oracle.marginal_variance(float(process.alphas_cumprod[-1]))


def covariance_errors(schedule: str, std: torch.Tensor, spacing: str) -> dict[str, dict[int, float]]:
    base = GaussianDiffusion(get_beta_schedule(schedule, 1000))
    oracle = GaussianOracle(torch.linspace(-1.0, 1.0, len(std), dtype=torch.float64), std)
    model_fn = oracle.model_fn(torch.from_numpy(base.alphas_cumprod))
    errors: dict[str, dict[int, float]] = {name: {} for name in SAMPLERS}
    for nfe in NFES:
        if nfe == base.num_timesteps:
            process = base
        else:
            process = quadratic_respacing(base, nfe) if spacing == "quadratic" else base.respaced(str(nfe))
        variances = {
            "DDPM": ancestral_variance(process, oracle, model_fn),
            "DDIM": deterministic_variance(sample_ddim, process, oracle, model_fn),
            "DPM-Solver++(2M)": deterministic_variance(sample_dpm_solver_pp, process, oracle, model_fn),
        }
        for name, variance in variances.items():
            errors[name][nfe] = float((variance - std**2).norm() / (std**2).norm())
    return errors


def plot(results: dict[str, dict[str, dict[int, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for (spacing, errors), style in zip(results.items(), ("-", "--"), strict=False):
        for name, marker in zip(SAMPLERS, "osd", strict=True):
            axis.loglog(
                list(errors[name]),
                list(errors[name].values()),
                style,
                marker=marker,
                label=f"{name}, {spacing}",
            )
    axis.axhline(0.02, color="grey", linewidth=0.8, linestyle=":", label="2% target")
    axis.set(xlabel="NFE (network calls)", ylabel="relative covariance error", title=title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedule", default="linear", help="beta schedule (T = 1000)")
    parser.add_argument("--std-min", type=float, default=0.75, help="smallest data std s")
    parser.add_argument("--std-max", type=float, default=1.5, help="largest data std s")
    parser.add_argument("--name", default="sampler_accuracy")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    load_before = load_average()
    std = torch.linspace(args.std_min, args.std_max, 8, dtype=torch.float64)
    results = {
        spacing: covariance_errors(args.schedule, std, spacing) for spacing in ("uniform", "quadratic")
    }

    sections = []
    for spacing, errors in results.items():
        rows = [[name, *(f"{100 * errors[name][nfe]:.2f}%" for nfe in NFES)] for name in SAMPLERS]
        sections.append(f"### {spacing} steps\n\n" + markdown_table(["sampler", *map(str, NFES)], rows))
    title = f"{args.schedule} schedule, s in [{args.std_min}, {args.std_max}]"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    plot(results, RESULTS_DIR / f"{args.name}.png", title)
    best_20 = min(results[spacing]["DPM-Solver++(2M)"][20] for spacing in results)
    body = (
        f"Relative covariance error against NFE, {title}, exact (no Monte Carlo).\n\n"
        + "\n\n".join(sections)
        + f"\n\n![plot]({args.name}.png)\n\nTarget: DPM-Solver++ at 20 NFE "
        f"within 2%. Best measured: {100 * best_20:.2f}% ({'met' if best_20 < 0.02 else 'MISSED'})."
    )
    data = {"schedule": args.schedule, "std": std.tolist(), "errors": results}
    write_results(args.name, "Sampler accuracy on the Gaussian oracle", body, data, load_before)
    return data


if __name__ == "__main__":
    main()
