"""I²SB bridge: parity with the official implementation's numbers and closed-form Gaussian oracles."""

import json
from pathlib import Path

import pytest
import torch

from lit_diffsr.diffusion.bridge import SchrodingerBridge, gaussian_product_coef

REFERENCE = json.loads((Path(__file__).parents[1] / "fixtures" / "reference" / "i2sb.json").read_text())
TABLES = ("betas", "std_fwd", "std_bwd", "std_sb", "mu_x0", "mu_x1")
# The reference stored float32 values computed in float64: relative rounding <= 2^-24 ~ 6e-8.
TABLE_RTOL = 1e-6


def as64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def brownian_bridge(std_a: torch.Tensor, std_b: torch.Tensor, x0: torch.Tensor, x_b: torch.Tensor):
    """Law of x_a given x0 and x_b for x_s = x0 + W(σ_s²), σ_a < σ_b: plain Gaussian conditioning.

    Cov(x_a, x_b) = σ_a², Var(x_b) = σ_b², so the mean is x0 + σ_a²/σ_b² (x_b - x0) and the variance
    σ_a² - σ_a⁴/σ_b². Written independently of gaussian_product_coef on purpose.
    """
    ratio = std_a**2 / std_b**2
    return x0 + ratio * (x_b - x0), (std_a**2 - ratio * std_a**2).sqrt()


# ---------------------------------------------------------------------------------------- reference
@pytest.mark.parametrize(
    ("key", "n_steps", "beta_max"),
    [
        ("interval1000_bmax0.3", 1000, 0.3),
        ("interval10_bmax0.3", 10, 0.3),
        ("interval1000_bmax1.0", 1000, 1.0),
    ],
)
def test_schedule_tables_match_reference(key: str, n_steps: int, beta_max: float) -> None:
    bridge = SchrodingerBridge(n_steps=n_steps, beta_max=beta_max)
    reference = REFERENCE[key]
    for table in TABLES:
        ours = getattr(bridge, table)
        assert ours.dtype == torch.float64 and ours.shape == (n_steps,)
        torch.testing.assert_close(ours[reference["idx"]], as64(reference[table]), rtol=TABLE_RTOL, atol=0)


@pytest.mark.parametrize("n_steps", [10, 11])
def test_schedule_is_symmetric(n_steps: int) -> None:
    bridge = SchrodingerBridge(n_steps=n_steps)
    torch.testing.assert_close(bridge.betas, bridge.betas.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(bridge.std_bwd, bridge.std_fwd.flip(0), rtol=1e-12, atol=0)
    assert bridge.betas.argmax() == (n_steps - 1) // 2  # peak in the middle, β_max / N there for odd N
    torch.testing.assert_close(bridge.mu_x0 + bridge.mu_x1, torch.ones(n_steps, dtype=torch.float64))


def test_gaussian_product_coef_matches_reference() -> None:
    reference = REFERENCE["gaussian_product_coef"]
    coef1, coef2, var = gaussian_product_coef(as64(reference["sigma1"]), as64(reference["sigma2"]))
    for ours, name in ((coef1, "coef1"), (coef2, "coef2"), (var, "var")):
        torch.testing.assert_close(ours, as64(reference[name]), rtol=1e-12, atol=0)


def test_q_sample_ot_ode_and_label_match_reference() -> None:
    reference = REFERENCE["q_sample_ot_ode"]
    bridge = SchrodingerBridge()
    x0, x1 = torch.tensor(reference["x0"]), torch.tensor(reference["x1"])
    step = torch.tensor(reference["step"])
    torch.testing.assert_close(x0.sum(), torch.tensor(reference["x0_sum"]), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(x1.sum(), torch.tensor(reference["x1_sum"]), rtol=1e-6, atol=1e-5)

    x_t = bridge.q_sample(step, x0, x1, ot_ode=True)
    label = bridge.training_target(step, x0, x_t)
    # float32 on both sides: a few ulps of |x| <= 4; the label divides by std_fwd[10] ~ 0.033.
    torch.testing.assert_close(x_t, torch.tensor(reference["xt"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(label, torch.tensor(reference["label"]), rtol=1e-5, atol=3e-5)
    torch.testing.assert_close(x_t.sum(), torch.tensor(reference["xt_sum"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_t.flatten()[:4], torch.tensor(reference["xt_first"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        label.flatten()[:4], torch.tensor(reference["label_first"]), rtol=1e-5, atol=3e-5
    )


def test_posterior_ot_ode_matches_reference() -> None:
    reference = REFERENCE["q_sample_ot_ode"]
    x0, x1 = torch.tensor(reference["x0"]), torch.tensor(reference["x1"])
    x_prev = SchrodingerBridge().p_posterior(500, 999, x1, x0, ot_ode=True)
    torch.testing.assert_close(x_prev, torch.tensor(reference["xprev_500_from_999"]), rtol=1e-5, atol=1e-6)
    first = REFERENCE["p_posterior_ot_ode_500_from_999"]["xprev_first"]
    torch.testing.assert_close(x_prev.flatten()[:4], torch.tensor(first), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nfe", [1, 2, 5, 10])
def test_sampling_steps_match_reference(nfe: int) -> None:
    assert SchrodingerBridge().sampling_steps(nfe) == REFERENCE["space_indices_1000_nfe+1"][str(nfe)]


def test_sampling_steps_are_valid_for_every_nfe() -> None:
    bridge = SchrodingerBridge()
    for nfe in range(1, bridge.n_steps):
        steps = bridge.sampling_steps(nfe)
        assert len(steps) == nfe + 1 and steps[0] == 0 and steps[-1] == bridge.n_steps - 1
        assert all(a < b for a, b in zip(steps, steps[1:], strict=False)), nfe
    assert bridge.sampling_steps(bridge.n_steps - 1) == list(range(bridge.n_steps))


# ---------------------------------------------------------------------------------------- closed forms
def test_predict_x0_inverts_training_target() -> None:
    bridge = SchrodingerBridge()
    generator = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(2, 4, 3, 4, 4, generator=generator, dtype=torch.float64)
    step = torch.tensor([0, 250, 500, 999])
    x_t = bridge.q_sample(step, x0, x1, noise=torch.randn(x0.shape, generator=generator, dtype=x0.dtype))
    recovered = bridge.predict_x0(step, x_t, bridge.training_target(step, x0, x_t))
    torch.testing.assert_close(recovered, x0, rtol=0, atol=1e-12)
    assert bridge.predict_x0(step, x_t, bridge.training_target(step, x0, x_t), clip=1.0).abs().max() == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nfe", [1, 2, 5, 10, 999])
def test_ot_ode_sampling_with_perfect_predictor_follows_the_bridge(nfe: int, dtype: torch.dtype) -> None:
    """Given the true x0 every OT-ODE step lands on the Brownian-bridge mean between x0 and x_n, so the
    state at step s is x0 + σ_s²/σ_{N-1}² (x1 - x0) whatever nfe is. Step 0 keeps σ_0 = sqrt(β_0) > 0:
    the result is x0 up to (β_0 / σ_{N-1}²)(x1 - x0), about 7e-4 (x1 - x0) with the defaults."""
    bridge = SchrodingerBridge()
    generator = torch.Generator().manual_seed(nfe)
    x0, x1 = torch.randn(2, 2, 3, 8, 8, generator=generator, dtype=dtype)
    out, trajectory = bridge.sample(x1, lambda x_n, step: x0, nfe, ot_ode=True, return_trajectory=True)

    assert out.dtype == dtype and trajectory.shape == (nfe + 1, *x1.shape)
    assert torch.equal(trajectory[0], x1) and torch.equal(trajectory[-1], out)
    # Each step rounds a handful of times and the previous error is shrunk by coef_xn < 1: 8 ulps of |x|.
    atol = 8 * torch.finfo(dtype).eps * x1.abs().max().item()
    steps = bridge.sampling_steps(nfe)[::-1]
    for state, step in zip(trajectory, steps, strict=True):
        expected, _ = brownian_bridge(bridge.std_fwd[step], bridge.std_fwd[-1], x0.double(), x1.double())
        torch.testing.assert_close(state.double(), expected, rtol=0, atol=atol)
    gap = (bridge.std_fwd[0] / bridge.std_fwd[-1]) ** 2 * (x1.double() - x0.double())
    torch.testing.assert_close(out.double() - x0.double(), gap, rtol=0, atol=atol)


def monte_carlo_tolerances(std: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """5 standard errors: of the mean, std / sqrt(M); of the std, about std / sqrt(2 M)."""
    return 5 * std / count**0.5, 5 * std / (2 * count) ** 0.5


def test_q_sample_marginal_monte_carlo() -> None:
    bridge = SchrodingerBridge()
    count, step = 100_000, 300
    x0 = torch.tensor([-1.0, 0.5, 1.0], dtype=torch.float64)
    x1 = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    samples = bridge.q_sample(step, x0.expand(count, 3), x1.expand(count, 3), noise=noise)

    mean = bridge.mu_x0[step] * x0 + bridge.mu_x1[step] * x1
    std = bridge.std_sb[step].expand(3)
    mean_tol, std_tol = monte_carlo_tolerances(std, count)
    assert ((samples.mean(0) - mean).abs() < mean_tol).all()
    assert ((samples.std(0) - std).abs() < std_tol).all()
    torch.testing.assert_close(bridge.q_sample(step, x0, x1, ot_ode=True), mean, rtol=0, atol=1e-15)


def test_posterior_step_with_perfect_predictor_monte_carlo() -> None:
    bridge = SchrodingerBridge()
    count, nprev, n = 100_000, 300, 700
    x0 = torch.tensor([-1.0, 0.0, 0.8], dtype=torch.float64)
    x_n = torch.tensor([0.4, -0.6, 0.9], dtype=torch.float64)
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(count, 3, generator=generator, dtype=torch.float64)
    samples = bridge.p_posterior(nprev, n, x_n.expand(count, 3), x0.expand(count, 3), noise=noise)

    mean, std = brownian_bridge(bridge.std_fwd[nprev], bridge.std_fwd[n], x0, x_n)
    mean_tol, std_tol = monte_carlo_tolerances(std, count)
    assert ((samples.mean(0) - mean).abs() < mean_tol).all()
    assert ((samples.std(0) - std).abs() < std_tol).all()


def test_stochastic_sampling_chain_with_perfect_predictor_monte_carlo() -> None:
    """Chained noisy posterior steps from x1 compose to the Brownian-bridge marginal at the last noisy
    state; the final step (to step 0) adds no noise, so it is an exact affine map of that state."""
    bridge = SchrodingerBridge()
    count, nfe = 50_000, 5
    x0 = torch.tensor([-1.0, 0.3], dtype=torch.float64).expand(count, 2)
    x1 = torch.tensor([0.5, -0.7], dtype=torch.float64).expand(count, 2)
    generator = torch.Generator().manual_seed(3)
    out, trajectory = bridge.sample(
        x1, lambda x_n, step: x0, nfe, generator=generator, return_trajectory=True
    )

    last_noisy = bridge.sampling_steps(nfe)[1]
    before_last = trajectory[-2]
    mean, std = brownian_bridge(bridge.std_fwd[last_noisy], bridge.std_fwd[-1], x0[0], x1[0])
    mean_tol, std_tol = monte_carlo_tolerances(std, count)
    assert ((before_last.mean(0) - mean).abs() < mean_tol).all()
    assert ((before_last.std(0) - std).abs() < std_tol).all()
    expected_out, _ = brownian_bridge(bridge.std_fwd[0], bridge.std_fwd[last_noisy], x0, before_last)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=1e-14)


@pytest.mark.parametrize("ot_ode", [False, True])
def test_inpainting_reimposes_the_observed_region(ot_ode: bool) -> None:
    bridge = SchrodingerBridge()
    generator = torch.Generator().manual_seed(4)
    x1_known = torch.randn(32, 3, 8, 8, generator=generator)
    mask = (torch.rand(32, 1, 8, 8, generator=generator) < 0.5).float()
    x1 = torch.where(mask.bool(), x1_known, torch.zeros_like(x1_known))
    nfe = 5
    out, trajectory = bridge.sample(
        x1,
        lambda x_n, step: torch.zeros_like(x_n),
        nfe,
        ot_ode=ot_ode,
        generator=generator,
        mask=mask,
        x1_known=x1_known,
        return_trajectory=True,
    )
    observed = mask.bool().expand_as(x1)
    assert torch.equal(out[observed], x1_known[observed])
    assert (out[~observed] != x1_known[~observed]).all()  # the zero predictor pulls it elsewhere
    # Intermediate states: x1_known + std_sb[n'] z in the observed region (no noise with OT-ODE).
    for state, step in zip(trajectory[1:-1], bridge.sampling_steps(nfe)[-2:0:-1], strict=True):
        residual = (state - x1_known)[observed].double() / bridge.std_sb[step]
        if ot_ode:
            assert torch.equal(state[observed], x1_known[observed])
        else:  # ~6000 draws: 5 standard errors of an empirical std of 1 is 5 / sqrt(2 * 6000) < 0.05
            assert abs(residual.std().item() - 1) < 0.05 and abs(residual.mean().item()) < 0.07


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_errors() -> None:
    bridge = SchrodingerBridge(n_steps=10)
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="n_steps"):
        SchrodingerBridge(n_steps=1)
    with pytest.raises(ValueError, match="beta_min"):
        SchrodingerBridge(n_steps=10, beta_max=1e-4)
    with pytest.raises(ValueError, match=r"step must lie in \[0, 9\]"):
        bridge.q_sample(10, x, x)
    with pytest.raises(TypeError, match="step must be an int"):
        bridge.q_sample(torch.tensor([0.5, 1.0]), x, x)
    with pytest.raises(ValueError, match="step has 3 entries but the batch has 2"):
        bridge.q_sample(torch.tensor([0, 1, 2]), x, x)
    with pytest.raises(ValueError, match="shapes must match"):
        bridge.q_sample(1, x, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="nprev < n"):
        bridge.p_posterior(5, 5, x, x)
    with pytest.raises(ValueError, match=r"nfe must be an int in \[1, 9\]"):
        bridge.sampling_steps(10)
    with pytest.raises(ValueError, match="mask must hold only 0"):
        bridge.sample(x, lambda x_n, step: x_n, 2, mask=torch.full_like(x, 0.5))
    with pytest.raises(ValueError, match="must broadcast to x1"):
        bridge.sample(x, lambda x_n, step: x_n, 2, mask=torch.ones(3, 3))
