"""GaussianDiffusion: parameterisations, variances, losses, the full bound and respacing."""

import math

import numpy as np
import pytest
import torch

from lit_diffsr.diffusion import GaussianDiffusion, GaussianOracle, get_beta_schedule, space_timesteps

torch.set_num_threads(1)


def make(prediction: str = "eps", variance: str = "fixed_small", loss: str | None = None,
         schedule: str = "cosine", steps: int = 1000) -> GaussianDiffusion:
    return GaussianDiffusion(get_beta_schedule(schedule, steps), prediction=prediction, variance=variance,
                             loss=loss)


def data(batch: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, 3, 4, 4, generator=generator, dtype=torch.float64) * 2 - 1
    return x0, torch.randn(x0.shape, generator=generator, dtype=torch.float64)


T_VALUES = torch.tensor([0, 3, 500, 999])


def test_eps_and_v_parameterisations_round_trip() -> None:
    diffusion, (x0, noise) = make(), data()
    x_t = diffusion.q_sample(x0, T_VALUES, noise)
    torch.testing.assert_close(diffusion.predict_x0_from_eps(x_t, T_VALUES, noise), x0)
    torch.testing.assert_close(diffusion.predict_eps_from_x0(x_t, T_VALUES, x0), noise)
    v = diffusion.predict_v(x0, noise, T_VALUES)
    torch.testing.assert_close(diffusion.predict_x0_from_v(x_t, T_VALUES, v), x0)
    torch.testing.assert_close(diffusion.predict_eps_from_v(x_t, T_VALUES, v), noise)
    # ||v||^2 = ||eps||^2 + ||x0||^2 - 2 sqrt(abar (1 - abar)) <eps, x0> by its definition.
    abar = torch.from_numpy(diffusion.alphas_cumprod[T_VALUES]).view(-1, 1, 1, 1)
    expected = abar * noise**2 + (1 - abar) * x0**2 - 2 * torch.sqrt(abar * (1 - abar)) * noise * x0
    torch.testing.assert_close(v**2, expected)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_exact_target_gives_true_x0_and_posterior_mean(prediction: str) -> None:
    diffusion, (x0, noise) = make(prediction), data()
    x_t = diffusion.q_sample(x0, T_VALUES, noise)
    target = diffusion.training_target(x0, noise, T_VALUES)
    out = diffusion.p_mean_variance(target, x_t, T_VALUES, clip_denoised=False)
    true_mean, true_variance, _ = diffusion.q_posterior_mean_variance(x0, x_t, T_VALUES)
    torch.testing.assert_close(out["pred_x0"], x0)
    torch.testing.assert_close(out["mean"], true_mean)
    torch.testing.assert_close(out["variance"], true_variance)
    keep = T_VALUES > 0  # at t = 0 eps is 1/sqrt(1/abar - 1) ~ 150 times less determined by x_0
    torch.testing.assert_close(out["pred_eps"][keep], noise[keep])


def test_clipping_bounds_pred_x0_and_keeps_eps_consistent() -> None:
    diffusion, (x0, noise) = make(), data()
    x_t = diffusion.q_sample(x0, T_VALUES, noise)
    wild_eps = 5 * noise  # pushes the predicted x_0 far outside [-1, 1]
    out = diffusion.p_mean_variance(wild_eps, x_t, T_VALUES, clip_denoised=True)
    assert out["pred_x0"].abs().max() <= 1.0
    unclipped = diffusion.p_mean_variance(wild_eps, x_t, T_VALUES, clip_denoised=False)
    assert unclipped["pred_x0"].abs().max() > 1.5
    torch.testing.assert_close(diffusion.predict_x0_from_eps(x_t, T_VALUES, out["pred_eps"]), out["pred_x0"])


def test_learned_range_interpolates_log_variances() -> None:
    diffusion, (x0, noise) = make("eps", "learned_range", "hybrid"), data()
    x_t = diffusion.q_sample(x0, T_VALUES, noise)
    low, high = np.log(np.append(diffusion.posterior_variance[1], diffusion.posterior_variance[1:])), np.log(
        diffusion.betas)
    for v, expected in ((-1.0, low), (1.0, high), (0.0, (low + high) / 2)):
        output = torch.cat([noise, torch.full_like(noise, v)], dim=1)
        log_variance = diffusion.p_mean_variance(output, x_t, T_VALUES)["log_variance"]
        # Nichol & Dhariwal 2021, eq. 15: v = -1 gives tilde-beta_t, v = 1 gives beta_t.
        torch.testing.assert_close(log_variance[:, 0, 0, 0], torch.from_numpy(expected[T_VALUES]))
    with pytest.raises(ValueError, match="6 channels"):
        diffusion.p_mean_variance(noise, x_t, T_VALUES)


def test_fixed_large_uses_beta_after_step_zero() -> None:
    diffusion, (x0, noise) = make(variance="fixed_large"), data()
    x_t = diffusion.q_sample(x0, T_VALUES, noise)
    variance = diffusion.p_mean_variance(noise, x_t, T_VALUES)["variance"][:, 0, 0, 0]
    expected = [diffusion.posterior_variance[1], *diffusion.betas[T_VALUES[1:]]]
    torch.testing.assert_close(variance, torch.tensor(expected, dtype=torch.float64))


def exact_model(diffusion: GaussianDiffusion, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                offset: float = 0.0):
    """A 'network' returning the training target (+ offset) and recording the steps it was called with."""
    calls = []

    def model_fn(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        calls.append(model_t)
        return diffusion.training_target(x0, noise, t) + offset

    return model_fn, calls


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_simple_losses_of_exact_and_offset_predictions(prediction: str) -> None:
    x0, noise = data()
    mse_process, l1_process = make(prediction), make(prediction, loss="l1")
    model_fn, _ = exact_model(mse_process, x0, noise, T_VALUES)
    assert mse_process.training_losses(model_fn, x0, T_VALUES, noise)["loss"].abs().max() < 1e-20
    offset_fn, _ = exact_model(mse_process, x0, noise, T_VALUES, offset=0.5)
    mse = mse_process.training_losses(offset_fn, x0, T_VALUES, noise)
    l1 = l1_process.training_losses(offset_fn, x0, T_VALUES, noise)
    torch.testing.assert_close(mse["loss"], torch.full((4,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(l1["loss"], torch.full((4,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(l1["mse"], mse["mse"])  # mse is reported for every loss type
    assert bool((mse["vb"] == 0).all())


def test_mask_excludes_pixels_from_the_loss() -> None:
    diffusion, (x0, noise) = make(), data()
    mask = torch.zeros(4, 1, 4, 4, dtype=torch.float64)
    mask[..., :2] = 1.0

    def wrong_outside_mask(x_t: torch.Tensor, model_t: torch.Tensor) -> torch.Tensor:
        return noise + 3.0 * (1 - mask)

    masked = diffusion.training_losses(wrong_outside_mask, x0, T_VALUES, noise, mask=mask)
    unmasked = diffusion.training_losses(wrong_outside_mask, x0, T_VALUES, noise)
    assert masked["loss"].abs().max() < 1e-20
    torch.testing.assert_close(unmasked["loss"], torch.full((4,), 4.5, dtype=torch.float64))  # 9 on half
    with pytest.raises(ValueError, match="mask"):
        diffusion.training_losses(wrong_outside_mask, x0, T_VALUES, noise, mask=mask[:, :, :3])


def test_hybrid_vb_term_does_not_train_the_prediction() -> None:
    diffusion, (x0, noise) = make("eps", "learned_range", "hybrid"), data()
    t = torch.tensor([0, 5, 300, 999])
    output = torch.cat([0.7 * noise, torch.zeros_like(noise)], dim=1).requires_grad_()
    losses = diffusion.training_losses(lambda x_t, model_t: output, x0, t, noise)
    assert bool((losses["vb"] > 0).all())
    losses["loss"].sum().backward()
    channels = x0.shape[1]
    # d mse / d eps_theta = 2 (eps_theta - eps) / numel per sample: the vb term adds nothing to it.
    torch.testing.assert_close(output.grad[:, :channels], 2 * (0.7 * noise - noise) / noise[0].numel())
    assert output.grad[:, channels:].abs().sum() > 0  # ... but it does train the variance.


def test_learned_variance_needs_hybrid_loss() -> None:
    with pytest.raises(ValueError, match="learned_range"):
        make("eps", "learned_range", "mse")
    with pytest.raises(ValueError, match="learned_range"):
        make("eps", "fixed_large", "hybrid")
    assert make("eps", "learned_range").loss == "hybrid" and make().loss == "mse"
    with pytest.raises(ValueError, match="prediction"):
        make("score")
    with pytest.raises(ValueError, match="t must be an integer"):
        make().q_sample(torch.zeros(2, 1), torch.tensor([0.5, 1.0]))


def test_respacing_keeps_alphas_cumprod_and_maps_steps() -> None:
    diffusion = make("v", "learned_range", "hybrid")
    kept = space_timesteps(1000, "ddim25")
    spaced = diffusion.respaced("ddim25")
    np.testing.assert_allclose(spaced.alphas_cumprod, diffusion.alphas_cumprod[kept], rtol=1e-12)
    assert spaced.timestep_map.tolist() == kept
    assert (spaced.prediction, spaced.variance, spaced.loss) == ("v", "learned_range", "hybrid")
    twice = spaced.respaced("5")  # respacing a respaced process composes the maps
    assert twice.timestep_map.tolist() == [kept[i] for i in space_timesteps(25, "5")]
    np.testing.assert_allclose(twice.alphas_cumprod, diffusion.alphas_cumprod[twice.timestep_map], rtol=1e-12)


def test_training_losses_call_the_network_with_original_steps() -> None:
    spaced, (x0, noise) = make().respaced("ddim10"), data()
    t = torch.tensor([0, 1, 5, 9])
    model_fn, calls = exact_model(spaced, x0, noise, t)
    spaced.training_losses(model_fn, x0, t, noise)
    assert calls[0].tolist() == [0, 100, 500, 900]


@pytest.mark.parametrize(("counts", "message"), [("ddim6", "no integer stride"), ([6, 6], "cannot keep"),
                                                 ("ten", "comma-separated"), ([0], "positive")])
def test_space_timesteps_rejects_impossible_requests(counts, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        space_timesteps(10, counts)


def test_space_timesteps_sections() -> None:
    # 10 steps in sections of 4, 3, 3 keeping 2, 1, 3: ends of each section, strided evenly.
    assert space_timesteps(10, "2,1,3") == [0, 3, 4, 7, 8, 9]
    assert space_timesteps(10, [2, 1, 3]) == [0, 3, 4, 7, 8, 9]
    # a bare count (what `model.sampler.steps=100` on the command line gives) is one section
    assert space_timesteps(10, 4) == space_timesteps(10, "4") == [0, 3, 6, 9]


def test_nll_bpd_adds_up_and_prefers_the_true_denoiser() -> None:
    diffusion = make(steps=20)
    oracle = GaussianOracle(torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.4))
    x0 = (oracle.sample(2, torch.Generator().manual_seed(1)).clamp(-1, 1) * 127.5).round() / 127.5
    alphas_cumprod = torch.from_numpy(diffusion.alphas_cumprod)
    good = diffusion.nll_bpd(oracle.model_fn(alphas_cumprod), x0, generator=torch.Generator().manual_seed(2))
    bad = diffusion.nll_bpd(lambda x_t, model_t: torch.zeros_like(x_t), x0,
                            generator=torch.Generator().manual_seed(2))
    assert good["vb"].shape == good["mse"].shape == (2, 20)
    torch.testing.assert_close(good["total_bpd"], good["vb"].sum(1) + good["prior_bpd"])
    assert bool((good["total_bpd"] < bad["total_bpd"]).all())
    # Prior term: KL(N(sqrt(abar) x0, 1 - abar) || N(0, 1)) per dimension, in bits.
    abar = diffusion.alphas_cumprod[-1]
    prior = 0.5 * (-math.log(1 - abar) - abar + abar * x0**2) / math.log(2)
    torch.testing.assert_close(good["prior_bpd"], prior.flatten(1).mean(1))
