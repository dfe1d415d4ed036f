"""course_lib.sde against independent computations: the discrete linear schedule, Monte Carlo
of the forward SDE, the oracle mixture's exact density and mode weights, and autograd."""
import math

import pytest
import torch

from course_lib import sde as sde_mod
from course_lib.data.mixture import make_mixture
from course_lib.schedules import linear_schedule
from course_lib.sde import (VPSDE, divergence, euler_maruyama_step, ode_drift, ode_log_likelihood,
                            ode_sample, reverse_drift, reverse_sde_sample, score_fn_from_eps_model)

F64 = torch.float64
SDE = VPSDE()


def oracle(name):
    mix = make_mixture(name).to(dtype=F64)
    return mix, (lambda x, t: mix.marginal_score(x, SDE.alpha_bar(t)))


def test_discretised_sde_is_the_linear_schedule_of_ho_et_al():
    torch.testing.assert_close(SDE.discrete_betas(1000), linear_schedule(1000).betas[1:])
    # alpha-bar(t) = exp(-int beta) vs the chain's prod (1 - beta_t): their logs differ by
    # sum_t beta_t^2 / 2 + ... (at most ~0.04 here) and by the shift between t/T and (t-1)/(T-1)
    t = torch.tensor([0.05, 0.2, 0.5, 0.8], dtype=F64)
    ab = linear_schedule(1000).alpha_bars[(t * 1000).round().long()]
    assert (SDE.alpha_bar(t).log() - ab.log()).abs().max() < 0.05


def test_marginal_matches_euler_maruyama_of_the_forward_sde(one_thread):
    g = torch.Generator().manual_seed(0)
    x0, n, M = 1.5, 2000, 40_000
    x = torch.full((M, 1), x0, dtype=F64)
    dt = 0.6 / n
    for i in range(n):
        t = torch.full((M,), i * dt, dtype=F64)
        z = torch.randn(M, 1, generator=g, dtype=F64)
        x = euler_maruyama_step(x, SDE.drift(x, t), SDE.diffusion(t), dt, z)
    m, s = SDE.marginal_mean_std(torch.tensor(0.6, dtype=F64))
    se_mean = s / math.sqrt(M)
    assert abs(x.mean() - m * x0) < 4 * se_mean + 2e-3          # + Euler bias O(dt)
    assert abs(x.var() / s**2 - 1) < 4 * math.sqrt(2 / M) + 2e-3


def test_euler_maruyama_step_is_the_textbook_update():
    x, drift, z = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    g = torch.tensor([0.5, 1.0, 2.0, 3.0])
    out = euler_maruyama_step(x, drift, g, -0.01, z)
    torch.testing.assert_close(out, x - 0.01 * drift + g[:, None] * 0.1 * z)


def test_drifts_combine_f_g_and_the_score():
    x, t = torch.randn(5, 2, dtype=F64), torch.rand(5, dtype=F64)
    score = lambda x, t: -x * (1 + t[:, None])
    beta = SDE.beta(t)[:, None]
    torch.testing.assert_close(reverse_drift(SDE, score, x, t), -0.5 * beta * x - beta * score(x, t))
    torch.testing.assert_close(ode_drift(SDE, score, x, t), -0.5 * beta * x - 0.5 * beta * score(x, t))


def test_divergence_exact_and_hutchinson_against_a_known_jacobian():
    A = torch.tensor([[1.0, 2.0, 0.0], [0.5, -3.0, 1.0], [0.0, 4.0, 0.25]], dtype=F64)
    fun = lambda x: x @ A.T + x.pow(2)                      # Jacobian A + 2 diag(x)
    x = torch.randn(6, 3, dtype=F64)
    exact = A.trace() + 2 * x.sum(1)
    torch.testing.assert_close(divergence(fun, x), exact)
    est = divergence(fun, x, hutchinson=4000, generator=torch.Generator().manual_seed(1))
    assert (est - exact).abs().max() < 0.25                   # off-diagonal noise, |A_ij| <= 4
    img = torch.randn(2, 1, 3, 3, dtype=F64)                  # images: div of 2x is 2 * 9
    torch.testing.assert_close(divergence(lambda z: 2 * z, img), torch.full((2,), 18.0, dtype=F64))


def test_ode_likelihood_with_the_exact_score_is_the_true_log_density(one_thread):
    """The issue's bar: within 1e-3 nats per point when p_1 is the exact noised marginal."""
    mix, score = oracle("three_unequal")
    x0 = mix.sample(6, generator=torch.Generator().manual_seed(2))
    q1 = lambda x: mix.marginal_log_prob(x, SDE.alpha_bar(torch.tensor(1.0, dtype=F64)))
    log_p, x1 = ode_log_likelihood(SDE, score, x0, prior_log_prob=q1)
    assert (log_p - mix.log_prob(x0)).abs().max() < 1e-3
    assert x1.shape == x0.shape and x1.std() > 0.5          # x_1 is close to N(0, I)


def test_samplers_with_the_exact_score_recover_the_mode_weights(one_thread):
    mix, score = oracle("bimodal_1d")
    g = torch.Generator().manual_seed(3)
    N = 3000
    se = math.sqrt(0.3 * 0.7 / N)
    x = reverse_sde_sample(SDE, score, (N, 1), n_steps=400, generator=g, device="cpu")
    assert abs((x < -0.25).double().mean() - 0.3) < 4 * se + 0.01
    xT = torch.randn(200, 1, generator=g, dtype=F64)
    x, nfe = ode_sample(SDE, score, xT=xT)
    assert abs((x < -0.25).double().mean() - 0.3) < 4 * math.sqrt(0.21 / 200) + 0.01
    # the flow preserves order in 1-D: sorted x_1 map to sorted x_0
    order = xT[:, 0].argsort()
    assert (x[order, 0].diff() >= 0).all() and nfe > 10


def test_reverse_sde_returns_its_trajectory_and_validates_arguments():
    _, score = oracle("bimodal_1d")
    x, path = reverse_sde_sample(SDE, score, (4, 1), n_steps=5, return_trajectory=True,
                                 xT=torch.zeros(4, 1, dtype=F64), generator=torch.Generator())
    assert path.shape == (6, 4, 1)
    with pytest.raises(ValueError, match="n_steps"):
        reverse_sde_sample(SDE, score, (4, 1), n_steps=0)
    with pytest.raises(ValueError, match="beta_max"):
        VPSDE(beta_min=1.0, beta_max=0.5)


def test_score_from_an_eps_model_is_the_oracle_score():
    mix, score = oracle("eight_unequal")
    exact_eps = lambda x, t_step: -SDE.marginal_mean_std(t_step.double() / 1000)[1][:, None] * \
        mix.marginal_score(x.double(), SDE.alpha_bar(t_step.double() / 1000))
    fn = score_fn_from_eps_model(exact_eps, SDE, T=1000)
    x, t = torch.randn(8, 2, dtype=F64), torch.rand(8, dtype=F64) * 0.9 + 0.05
    torch.testing.assert_close(fn(x, t), score(x, t), rtol=1e-5, atol=1e-5)
