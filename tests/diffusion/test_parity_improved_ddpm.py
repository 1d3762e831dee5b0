"""Parity with every value in tests/fixtures/reference/improved_ddpm.json (openai/improved-diffusion).

Float64 tables are compared at rtol 1e-10 (both sides are float64 NumPy). Float32 tensors use
rtol 1e-5 with atol 1e-6: the atol only matters for values near zero (e.g. a KL of two nearly equal
Gaussians, ~2e-3 bits/dim, which loses about three digits of float32 precision to cancellation).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import (
    GaussianDiffusion,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    get_beta_schedule,
    normal_kl,
    space_timesteps,
    timestep_embedding,
)

REFERENCE_DIR = Path(__file__).parents[1] / "fixtures" / "reference"
REFERENCE = json.loads((REFERENCE_DIR / "improved_ddpm.json").read_text())
FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


def tensor(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def hybrid_cosine_process() -> GaussianDiffusion:
    return GaussianDiffusion(get_beta_schedule("cosine", 1000), prediction="eps", variance="learned_range",
                             loss="hybrid")


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedule_tables_match_reference(name: str) -> None:
    reference = REFERENCE[f"schedule_{name}_T1000"]
    diffusion = GaussianDiffusion(get_beta_schedule(name, 1000))
    index = reference["idx"]
    for table, expected in reference.items():
        if table != "idx":
            np.testing.assert_allclose(getattr(diffusion, table)[index], expected, rtol=1e-10, atol=1e-300,
                                       err_msg=f"{name}.{table}")


def test_linear_schedule_rescaled_for_4000_steps() -> None:
    betas = get_beta_schedule("linear", 4000)
    np.testing.assert_allclose(betas[[0, -1]], REFERENCE["linear_T4000_betas_first_last"], rtol=1e-12)


def test_normal_kl() -> None:
    ref = REFERENCE["normal_kl"]
    kl = normal_kl(tensor(ref["mean1"]), tensor(ref["logvar1"]), tensor(ref["mean2"]), tensor(ref["logvar2"]))
    torch.testing.assert_close(kl, tensor(ref["kl"]), **FLOAT32)


def test_discretized_gaussian_log_likelihood() -> None:
    ref = REFERENCE["discretized_gaussian_log_likelihood"]
    x, means, log_scales = tensor(ref["x"]), tensor(ref["means"]), tensor(ref["log_scales"])
    logp = discretized_gaussian_log_likelihood(x, means, log_scales)
    torch.testing.assert_close(logp, tensor(ref["logp"]), **FLOAT32)


def test_approx_standard_normal_cdf() -> None:
    ref = REFERENCE["approx_standard_normal_cdf"]
    torch.testing.assert_close(approx_standard_normal_cdf(tensor(ref["x"])), tensor(ref["cdf"]), **FLOAT32)


def test_q_sample_and_posterior() -> None:
    ref = REFERENCE["q_sample_q_posterior"]
    diffusion = hybrid_cosine_process()
    x0, noise, t = tensor(ref["x0"]), tensor(ref["noise"]), torch.tensor(ref["t"])
    x_t = diffusion.q_sample(x0, t, noise)
    torch.testing.assert_close(x_t, tensor(ref["xt"]), **FLOAT32)
    mean, variance, log_variance = diffusion.q_posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(mean, tensor(ref["post_mean"]), **FLOAT32)
    torch.testing.assert_close(variance.flatten(1)[:, 0], tensor(ref["post_var"]), **FLOAT32)
    torch.testing.assert_close(log_variance.flatten(1)[:, 0], tensor(ref["post_logvar"]), **FLOAT32)
    assert bool((variance == variance.flatten(1)[:, :1, None, None]).all()), "one variance per sample"


@pytest.mark.parametrize("key", ["hybrid_loss_t[0, 999]", "hybrid_loss_t[10, 500]"])
def test_hybrid_loss_with_toy_network(key: str) -> None:
    inputs = REFERENCE["hybrid_loss_inputs"]
    x0, noise = tensor(inputs["x0"]), tensor(inputs["noise"])
    t = torch.tensor(json.loads(key.removeprefix("hybrid_loss_t")))

    def toy_network(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        # The fixed network of the fixture's README: [eps | v] = [0.5 x_t | tanh(0.1 x_t + 1e-3 t)].
        return torch.cat([0.5 * x_t, torch.tanh(0.1 * x_t + 1e-3 * model_t.float().view(-1, 1, 1, 1))], dim=1)

    losses = hybrid_cosine_process().training_losses(toy_network, x0, t, noise)
    for term in ("mse", "vb", "loss"):
        torch.testing.assert_close(losses[term], tensor(REFERENCE[key][term]), **FLOAT32, msg=term)


def test_space_timesteps() -> None:
    ref = REFERENCE["space_timesteps"]
    assert space_timesteps(1000, "250")[:5] == ref["1000_'250'"]
    assert len(space_timesteps(1000, "250")) == 250
    assert space_timesteps(1000, "ddim50")[:5] == ref["1000_'ddim50'"]
    assert len(space_timesteps(1000, "ddim50")) == 50
    assert len(space_timesteps(1000, [10, 15, 20])) == ref["1000_[10,15,20]_count"]


def test_spaced_cosine_50() -> None:
    ref = REFERENCE["spaced_cosine_50"]
    spaced = hybrid_cosine_process().respaced("50")
    assert spaced.num_timesteps == ref["num_timesteps"]
    head, tail = ref["timestep_map"][:5], ref["timestep_map"][5:]
    assert spaced.timestep_map[:5].tolist() == head and spaced.timestep_map[-3:].tolist() == tail
    np.testing.assert_allclose(spaced.betas[[0, -1]], ref["betas_first_last"], rtol=1e-10)
    assert (spaced.variance, spaced.loss) == ("learned_range", "hybrid")  # LEARNED_RANGE, RESCALED_MSE


def test_timestep_embedding() -> None:
    embedding = timestep_embedding(torch.tensor([0, 1, 999]), dim=8, max_period=10000)
    torch.testing.assert_close(embedding, tensor(REFERENCE["timestep_embedding"]), **FLOAT32)
