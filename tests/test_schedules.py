"""Schedules: properties, an independent numpy cosine schedule, log-SNR round trips, prior KL."""
import math

import numpy as np
import pytest
import torch

from course_lib.gaussians import gaussian_kl
from course_lib.schedules import (Schedule, cosine_schedule, linear_schedule, make_schedule, prior_kl,
                                  schedule_from_alpha_bars, schedule_from_betas,
                                  schedule_from_log_snr)


def _all_schedules():
    return {
        "linear": linear_schedule(),
        "linear_T10": linear_schedule(10, 1e-3, 0.3),
        "cosine": cosine_schedule(),
        "cosine_T50": cosine_schedule(50),
        "log_snr": schedule_from_log_snr(lambda u: 10 - 20 * u, 100),
        "betas": schedule_from_betas([0.1, 0.2, 0.5]),
    }


@pytest.mark.parametrize("name", list(_all_schedules()))
def test_alpha_bars_decrease_in_unit_interval(name):
    s = _all_schedules()[name]
    T = s.T
    for a in (s.betas, s.alphas, s.alpha_bars):
        assert a.shape == (T + 1,) and a.dtype == torch.float64
    assert s.betas[0] == 0 and s.alpha_bars[0] == 1
    assert ((s.alpha_bars > 0) & (s.alpha_bars <= 1)).all()
    assert (s.alpha_bars[1:] < s.alpha_bars[:-1]).all()
    torch.testing.assert_close(s.alphas, 1 - s.betas, rtol=0, atol=1e-15)
    torch.testing.assert_close(s.alpha_bars, torch.cumprod(s.alphas, 0), rtol=1e-12, atol=0)
    # SNR (Luo Eq. 109) decreases; SNR(0) = inf
    snr = s.snr(torch.arange(T + 1))
    assert snr[0] == math.inf and (snr[1:] < snr[:-1]).all()
    torch.testing.assert_close(s.log_snr(torch.arange(1, T + 1)), snr[1:].log())


def test_linear_schedule_endpoints():
    s = linear_schedule(1000, 1e-4, 0.02)
    assert s.T == 1000
    assert s.betas[1].item() == pytest.approx(1e-4, rel=1e-12)
    assert s.betas[1000].item() == pytest.approx(0.02, rel=1e-12)
    assert s.betas[500].item() == pytest.approx(1e-4 + (0.02 - 1e-4) * 499 / 999, rel=1e-12)
    # DDPM's alpha-bar_T is about 4e-5: x_T is almost pure noise
    assert 3e-5 < s.alpha_bars[-1].item() < 5e-5


def _numpy_cosine(T, s=0.008, max_beta=0.999):
    """Nichol & Dhariwal (2021), Eq. 17, written as improved-diffusion's betas_for_alpha_bar."""
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.array([min(1 - f((i + 1) / T) / f(i / T), max_beta) for i in range(T)])
    return betas, np.cumprod(1 - betas)


@pytest.mark.parametrize("T", [1000, 50, 7])
def test_cosine_schedule_matches_independent_numpy(T):
    betas, alphas_cumprod = _numpy_cosine(T)
    s = cosine_schedule(T)
    np.testing.assert_allclose(s.betas[1:].numpy(), betas, rtol=1e-12, atol=1e-15)
    # 0-based alphas_cumprod[i] is alpha-bar at step i + 1
    np.testing.assert_allclose(s.alpha_bars[1:].numpy(), alphas_cumprod, rtol=1e-12, atol=1e-300)


def test_cosine_schedule_clips_last_beta():
    s = cosine_schedule(1000)
    assert s.betas[-1].item() == 0.999                 # f(T) = 0 -> beta_T = 1, clipped
    assert (s.betas[1:-1] < 0.999).all()
    assert s.alpha_bars[-1].item() > 0
    assert cosine_schedule(1000, max_beta=0.5).betas.max().item() == 0.5
    # unclipped, alpha-bar_t = f(t) / f(0) exactly
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    assert s.alpha_bars[500].item() == pytest.approx(f(0.5) / f(0.0), rel=1e-12)


@pytest.mark.parametrize("log_snr", [lambda u: 10 - 20 * u,
                                     lambda u: torch.log(torch.tan(math.pi / 2 * (1 - u) * 0.999 + 1e-4) ** 2)])
def test_log_snr_schedule_round_trips(log_snr):
    T = 200
    s = schedule_from_log_snr(log_snr, T)
    t = torch.arange(1, T + 1)
    torch.testing.assert_close(s.log_snr(t), log_snr(t.double() / T), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(s.alpha_bars[1:], torch.sigmoid(log_snr(t.double() / T)))


def test_schedule_from_betas_and_make_schedule():
    s = schedule_from_betas(np.array([0.1, 0.2]))
    torch.testing.assert_close(s.alpha_bars, torch.tensor([1.0, 0.9, 0.72], dtype=torch.float64))
    assert s.T == 2
    assert torch.equal(make_schedule("cosine", 30).betas, cosine_schedule(30).betas)
    assert torch.equal(make_schedule("linear", 30, beta_T=0.1).betas, linear_schedule(30, beta_T=0.1).betas)
    assert "T=2" in repr(s)
    s32 = s.to(dtype=torch.float32)
    assert s32.alpha_bars.dtype == torch.float32 and s32.T == 2


def test_prior_kl_matches_gaussian_kl_and_monte_carlo():
    s = linear_schedule(100, 1e-3, 0.05)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 4, generator=g, dtype=torch.float64) * 2
    a = s.alpha_bars[-1].item()
    mu_q = (a ** 0.5 * x0).reshape(5, -1)
    logvar_q = torch.full_like(mu_q, math.log(1 - a))
    torch.testing.assert_close(prior_kl(s, x0), gaussian_kl(mu_q, logvar_q))
    # Monte Carlo: E_q[log q(x_T | x_0) - log N(x_T; 0, I)], one example, 200k samples
    x = x0[:1].reshape(1, -1)
    xT = a ** 0.5 * x + (1 - a) ** 0.5 * torch.randn(200_000, x.shape[1], generator=g, dtype=torch.float64)
    log_q = torch.distributions.Normal(a ** 0.5 * x, (1 - a) ** 0.5).log_prob(xT).sum(1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(xT).sum(1)
    est, se = (log_q - log_p).mean(), (log_q - log_p).std() / 200_000 ** 0.5
    assert abs(est - prior_kl(s, x0[:1])[0]) < 4 * se
    # with 2-D points too; and it shrinks as alpha-bar_T -> 0
    pts = torch.randn(7, 2, generator=g)
    assert prior_kl(s, pts).shape == (7,)
    assert (prior_kl(linear_schedule(1000), pts) < prior_kl(s, pts)).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="T"):
        linear_schedule(0)
    with pytest.raises(TypeError, match="T"):
        cosine_schedule(10.5)
    with pytest.raises(ValueError, match="beta_T"):
        linear_schedule(10, 1e-4, 1.0)
    with pytest.raises(ValueError, match="beta_1"):
        linear_schedule(10, 0.0, 0.02)
    with pytest.raises(ValueError, match="betas_1_to_T"):
        schedule_from_betas([0.1, 1.2])
    with pytest.raises(ValueError, match="betas_1_to_T"):
        schedule_from_betas([0.1, 0.0])
    with pytest.raises(ValueError, match="betas_1_to_T"):
        schedule_from_betas([])
    with pytest.raises(ValueError, match="log_snr"):
        schedule_from_log_snr(lambda u: 20 * u - 10, 10)      # increasing
    with pytest.raises(ValueError, match="name"):
        make_schedule("quadratic")
    with pytest.raises(ValueError, match="max_beta"):
        cosine_schedule(10, max_beta=1.0)
    s = linear_schedule(10)
    with pytest.raises(ValueError, match="t"):
        s.snr(11)
    with pytest.raises(TypeError, match="t"):
        s.snr(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="betas"):
        Schedule(torch.tensor([0.0, 1.5], dtype=torch.float64), torch.tensor([1.0, -0.5], dtype=torch.float64),
                 torch.tensor([1.0, -0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha_bars"):
        Schedule(torch.tensor([0.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64),
                 torch.tensor([0.9, 0.5], dtype=torch.float64))
    with pytest.raises(TypeError, match="x0"):
        prior_kl(s, [1.0, 2.0])


def test_schedule_from_alpha_bars_round_trips():
    s = cosine_schedule(50)
    torch.testing.assert_close(schedule_from_alpha_bars(s.alpha_bars).betas, s.betas)
    with pytest.raises(ValueError, match="alpha_bars"):
        schedule_from_alpha_bars(torch.tensor([0.9, 0.5], dtype=torch.float64))
