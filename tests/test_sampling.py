"""The sampler against spec §4, with the formulas written out independently in float64."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from unianimate.sampling import (SOLVER_START_T, apply_guidance, initial_latents, make_scheduler,
                                 predict_original, reference_alphas_cumprod, reference_timesteps,
                                 solver_timesteps)
from unianimate.utils import make_generator


def _spec_alphas_cumprod() -> np.ndarray:
    """Spec §4 in numpy float64, written independently of the module."""
    betas = np.linspace(np.sqrt(0.00085), np.sqrt(0.012), 1000, dtype=np.float64) ** 2
    sab = np.sqrt(np.cumprod(1.0 - betas))
    sab = (sab - sab[-1]) * sab[0] / (sab[0] - sab[-1])
    return sab ** 2


SPEC_VALUES = {0: 0.99915, 1: 0.998233, 34: 0.9656, 500: 0.2410, 939: 9.21e-4, 949: 6.13e-4,
               991: 1.30e-5, 999: 0.0}


def test_alphas_cumprod_match_spec_values() -> None:
    sched = make_scheduler(30)
    ab = sched.alphas_cumprod
    for t, val in SPEC_VALUES.items():
        if val == 0.0:
            assert float(ab[t]) == 0.0
        else:
            # spec values are given to 3-4 significant digits
            assert float(ab[t]) == pytest.approx(val, rel=2e-3), t
    np.testing.assert_allclose(ab.numpy(), _spec_alphas_cumprod(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(reference_alphas_cumprod().numpy(), _spec_alphas_cumprod(), rtol=1e-12,
                               atol=1e-15)
    assert float(sched.final_alpha_cumprod) == pytest.approx(0.99915, rel=1e-5)


def test_scheduler_is_a_diffusers_ddim() -> None:
    sched = make_scheduler(30)
    assert isinstance(sched, DDIMScheduler)
    cfg = sched.config
    assert cfg.prediction_type == "v_prediction"
    assert cfg.rescale_betas_zero_snr and not cfg.set_alpha_to_one and not cfg.clip_sample
    assert cfg.beta_schedule == "scaled_linear"
    # the stock float32 schedule agrees with ours to float32 precision
    stock = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          rescale_betas_zero_snr=True)
    np.testing.assert_allclose(stock.alphas_cumprod.double().numpy(), sched.alphas_cumprod.numpy(),
                               atol=1e-6)


def test_timesteps_30() -> None:
    ts = make_scheduler(30).timesteps.tolist()
    assert len(ts) == 31
    assert ts[0] == 991 and ts[-1] == 1
    assert ts == list(range(991, 0, -33))
    assert reference_timesteps(30).tolist() == ts


@pytest.mark.parametrize("n", [1, 10, 25, 50])
def test_timesteps_other_counts(n: int) -> None:
    stride = 1000 // n
    expected = sorted({min(999, 1 + i) for i in range(0, 1000, stride)}, reverse=True)
    assert make_scheduler(n).timesteps.tolist() == expected


def test_bad_step_count() -> None:
    with pytest.raises(ValueError):
        reference_timesteps(0)


def _spec_ddim_step(x: np.ndarray, v: np.ndarray, t: int, ab: np.ndarray, stride: int) -> np.ndarray:
    """Spec §4 / reference DDIM (eta 0) in float64."""
    a_t = ab[t]
    a_prev = ab[max(t - stride, 0)]
    x0 = np.sqrt(a_t) * x - np.sqrt(1 - a_t) * v
    eps = (x / np.sqrt(a_t) - x0) / np.sqrt(1 / a_t - 1)
    return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps


def test_ddim_steps_match_spec_formulas() -> None:
    sched = make_scheduler(30)
    ab = _spec_alphas_cumprod()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 3, 5, 6))
    x_ref = x.copy()
    x_t = torch.from_numpy(x)  # float64 through diffusers' step
    for t in sched.timesteps.tolist():
        v = rng.standard_normal(x.shape)
        x_ref = _spec_ddim_step(x_ref, v, t, ab, 33)
        x_t = sched.step(torch.from_numpy(v), t, x_t).prev_sample
        np.testing.assert_allclose(x_t.numpy(), x_ref, rtol=1e-7, atol=1e-9)
    # last step goes to alpha_bar(0): x0 predicted at t=1 then re-noised to ab[0]
    assert sched.timesteps[-1] == 1


def test_ddim_step_float32_close() -> None:
    sched = make_scheduler(30)
    ab = _spec_alphas_cumprod()
    gen = make_generator(1)
    x = torch.randn(1, 4, 2, 4, 4, generator=gen)
    xr = x.double().numpy()
    for t in sched.timesteps.tolist():
        v = torch.randn(x.shape, generator=gen)
        xr = _spec_ddim_step(xr, v.double().numpy(), t, ab, 33)
        x = sched.step(v, t, x).prev_sample
        assert x.dtype == torch.float32
    np.testing.assert_allclose(x.double().numpy(), xr, rtol=1e-4, atol=1e-4)


def test_initial_latents_formula() -> None:
    shape = (1, 4, 3, 4, 5)
    ref = torch.randn(1, 4, 4, 5, generator=make_generator(7))
    lat = initial_latents(shape, ref, make_generator(3), noise_prior_t=949, offset_noise=0.1)
    g = make_generator(3)
    n = torch.randn(shape, generator=g)
    o = torch.randn(1, 4, 3, 1, 1, generator=g)
    ab = _spec_alphas_cumprod()[949]
    expected = np.sqrt(ab) * ref.double().numpy()[:, :, None] + np.sqrt(1 - ab) * (n + 0.1 * o).double().numpy()
    np.testing.assert_allclose(lat.double().numpy(), expected, rtol=1e-5, atol=1e-6)
    # long-video variant: offset after the prior
    lat2 = initial_latents(shape, ref, make_generator(3), noise_prior_t=939, offset_after_prior=True)
    ab2 = _spec_alphas_cumprod()[939]
    expected2 = (np.sqrt(ab2) * ref.double().numpy()[:, :, None] + np.sqrt(1 - ab2) * n.double().numpy()
                 + 0.1 * o.double().numpy())
    np.testing.assert_allclose(lat2.double().numpy(), expected2, rtol=1e-5, atol=1e-6)
    # no prior: pure (offset) noise
    lat3 = initial_latents(shape, None, make_generator(3))
    np.testing.assert_allclose(lat3.numpy(), (n + 0.1 * o).numpy(), rtol=1e-6)


def test_initial_latents_seeded() -> None:
    shape = (1, 4, 2, 3, 3)
    a = initial_latents(shape, None, make_generator(5))
    b = initial_latents(shape, None, make_generator(5))
    c = initial_latents(shape, None, make_generator(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    with pytest.raises(ValueError):
        initial_latents(shape, torch.zeros(1, 4, 9, 9), make_generator(0))


def test_guidance() -> None:
    u = torch.tensor([1.0, 2.0])
    c = torch.tensor([2.0, 0.0])
    torch.testing.assert_close(apply_guidance(u, c, 2.5), torch.tensor([3.5, -3.0]))
    torch.testing.assert_close(apply_guidance(u, c, 1.0), c)


# ---------------------------------------------------------------- multistep solvers

SOLVERS = ("dpmpp_2m", "unipc")


@pytest.mark.parametrize("sampler", SOLVERS)
@pytest.mark.parametrize("n", [8, 10, 15, 20, 30])
def test_solver_schedule_facts(sampler: str, n: int) -> None:
    sched = make_scheduler(n, sampler)
    cfg = sched.config
    assert cfg.prediction_type == "v_prediction" and cfg.rescale_betas_zero_snr
    assert cfg.timestep_spacing == "trailing" and cfg.final_sigmas_type == "sigma_min"
    ts = sched.timesteps.tolist()
    # n timesteps, trailing over [0, 991]: the first is the 30-step DDIM's first (991), evenly spaced
    assert len(ts) == n and ts[0] == SOLVER_START_T == int(reference_timesteps(30)[0])
    assert ts == sorted(ts, reverse=True) and len(set(ts)) == n
    assert ts[-1] == round(992 / n) - 1
    # sigmas are those of the spec's alpha_bar at each timestep, then alpha_bar(0) as the DDIM's last step
    ab = _spec_alphas_cumprod()
    sigmas = sched.sigmas.double().numpy()
    np.testing.assert_allclose(1.0 / (1.0 + sigmas[:-1] ** 2), ab[ts], rtol=1e-5)
    assert 1.0 / (1.0 + sigmas[-1] ** 2) == pytest.approx(SPEC_VALUES[0], rel=1e-5)
    assert 1.0 / (1.0 + sigmas[0] ** 2) == pytest.approx(SPEC_VALUES[991], rel=2e-3)


def test_solver_timesteps_are_diffusers_trailing_from_999() -> None:
    from diffusers import DPMSolverMultistepScheduler

    stock = DPMSolverMultistepScheduler(timestep_spacing="trailing")
    for n in (1, 7, 8, 10, 15, 20, 30, 50):
        stock.set_timesteps(n)
        assert solver_timesteps(n, start=999).tolist() == stock.timesteps.tolist()
    with pytest.raises(ValueError, match="num_inference_steps"):
        solver_timesteps(993)
    with pytest.raises(ValueError, match="sampler must be one of"):
        make_scheduler(10, "euler")


@pytest.mark.parametrize("sampler", SOLVERS)
def test_solver_first_step_is_the_ddim_update(sampler: str) -> None:
    """Both solvers start first-order: from t=991 to their next timestep that is DDIM (eta 0) with the
    spec's formulas; later steps use the multistep history and differ."""
    sched = make_scheduler(10, sampler)
    ab = _spec_alphas_cumprod()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 2, 3, 4))
    v = rng.standard_normal(x.shape)
    t, t_next = sched.timesteps.tolist()[:2]
    out = sched.step(torch.from_numpy(v), t, torch.from_numpy(x)).prev_sample.numpy()
    np.testing.assert_allclose(out, _spec_ddim_step(x, v, t, ab, t - t_next), rtol=1e-4, atol=1e-5)
    x0 = predict_original(torch.from_numpy(x), torch.from_numpy(v), t).numpy()
    np.testing.assert_allclose(x0, np.sqrt(ab[t]) * x - np.sqrt(1 - ab[t]) * v, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("n", [10, 20])
def test_dpmpp_last_step_is_first_order_to_alpha_bar_0(n: int) -> None:
    """DPM-Solver++'s last step (to alpha_bar(0), a long step in log-SNR) is first-order at every step
    count (diffusers does that by itself only below 15 steps; UniPC always does): the DDIM update
    from the last timestep to alpha_bar(0), as the reference's last step."""
    sched = make_scheduler(n, "dpmpp_2m")
    ab = _spec_alphas_cumprod()
    rng = np.random.default_rng(n)
    x = torch.from_numpy(rng.standard_normal((1, 4, 2, 3, 4)))
    ts = sched.timesteps.tolist()
    for t in ts[:-1]:
        x = sched.step(torch.from_numpy(rng.standard_normal(x.shape)), t, x).prev_sample
    v = rng.standard_normal(x.shape)
    out = sched.step(torch.from_numpy(v), ts[-1], x).prev_sample.numpy()
    x_np, t = x.numpy(), ts[-1]
    x0 = np.sqrt(ab[t]) * x_np - np.sqrt(1 - ab[t]) * v
    eps = np.sqrt(1 - ab[t]) * x_np + np.sqrt(ab[t]) * v
    expected = np.sqrt(ab[0]) * x0 + np.sqrt(1 - ab[0]) * eps
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler", SOLVERS)
def test_solvers_solve_a_known_ode_like_ddim30(sampler: str) -> None:
    """A model whose data is one fixed latent mu (v = sqrt(ab) eps - sqrt(1-ab) mu) has the exact
    probability-flow solution sqrt(ab_0) mu + sqrt(1-ab_0) eps_991 from x at t=991: the 30-step DDIM
    reaches it, and so does each solver from the same start at any step count (to float32 sigmas)."""
    mu = torch.from_numpy(np.random.default_rng(4).standard_normal((1, 4, 2, 3, 4)))
    x_start = torch.from_numpy(np.random.default_rng(5).standard_normal(mu.shape))
    ab = torch.from_numpy(_spec_alphas_cumprod())

    def run(name: str, n: int) -> torch.Tensor:
        sched = make_scheduler(n, name)
        x = x_start.clone()
        for t in sched.timesteps.tolist():
            a, s = ab[t].sqrt(), (1 - ab[t]).sqrt()
            x = sched.step(a * (x - a * mu) / s - s * mu, t, x).prev_sample
        return x

    eps = (x_start - ab[991].sqrt() * mu) / (1 - ab[991]).sqrt()
    exact = ab[0].sqrt() * mu + (1 - ab[0]).sqrt() * eps
    assert float((run("ddim", 30) - exact).abs().max()) < 1e-12
    for n in (8, 15, 30):
        assert float((run(sampler, n) - exact).abs().max()) < 1e-5, n
