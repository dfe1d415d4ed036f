"""Discrete-time diffusion against independent computations: the iterated forward chain, Gaussian
conditioning, 0-based re-implementations of the DDPM and DDIM steps, the Gaussian-mixture oracle,
and the exact ELBO of Gaussian data."""
import math

import pytest
import torch
from torch import nn

from course_lib.data.mixture import make_mixture
from course_lib.diffusion import (ELBOTerms, broadcast, clipped_eps, ddim_sample, ddim_sigma, ddim_step, ddim_timesteps,
                                  ddpm_sample, ddpm_step, diffusion_loss, diffusion_loss_per_example,
                                  elbo_terms, elbo_weights, eps_fn_from_model, eps_fn_from_score_fn,
                                  eps_from_score, eps_from_x0, model_variances, p_mean_variance,
                                  posterior_variances, q_posterior_mean_variance, q_sample,
                                  score_from_eps, x0_from_eps, x0_from_score)
from course_lib.gaussians import gaussian_kl
from course_lib.metrics import exact_log_likelihood, mode_coverage
from course_lib.schedules import cosine_schedule, linear_schedule

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=F64):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


SCHED = linear_schedule(50, 1e-3, 0.2)          # short, so that exact loops over t are cheap


# ------------------------------------------------------------------------------ forward process

def test_broadcast_shapes():
    c = torch.arange(3.0)
    assert broadcast(c, torch.zeros(3, 2)).shape == (3, 1)
    assert broadcast(c, torch.zeros(3, 1, 28, 28)).shape == (3, 1, 1, 1)
    assert broadcast(c, torch.zeros(3, 2, dtype=F64)).dtype == F64


def test_q_sample_moments_match_closed_form():
    x0 = torch.tensor([[1.5, -2.0]], dtype=F64).expand(100_000, 2)
    t = 20
    xt, eps = q_sample(x0, t, SCHED, generator=gen(0), return_eps=True)
    a = SCHED.alpha_bars[t].item()
    se_mean = ((1 - a) / 100_000) ** 0.5
    assert ((xt.mean(0) - a ** 0.5 * x0[0]).abs() < 4 * se_mean).all()
    se_var = (1 - a) * (2 / 100_000) ** 0.5
    assert ((xt.var(0) - (1 - a)).abs() < 4 * se_var).all()
    torch.testing.assert_close(xt, a ** 0.5 * x0 + (1 - a) ** 0.5 * eps)


def test_closed_form_equals_iterated_chain():
    """q(x_t | x_0) (Luo Eq. 70) vs t steps of q(x_t | x_{t-1}) (Luo Eq. 31)."""
    s = SCHED
    # exactly: the composed mean / variance recursion m_t = sqrt(alpha_t) m_{t-1}, v_t = alpha_t v_{t-1} + beta_t
    m, v = torch.tensor(1.0, dtype=F64), torch.tensor(0.0, dtype=F64)
    for t in range(1, s.T + 1):
        m, v = s.alphas[t].sqrt() * m, s.alphas[t] * v + s.betas[t]
        torch.testing.assert_close(m, s.alpha_bars[t].sqrt(), rtol=1e-13, atol=0)
        torch.testing.assert_close(v, 1 - s.alpha_bars[t], rtol=1e-13, atol=0)
    # in distribution: iterate the chain on samples, compare moments with standard errors
    n, t_end = 100_000, 30
    x0 = torch.full((n, 1), 0.8, dtype=F64)
    x, g = x0.clone(), gen(1)
    for t in range(1, t_end + 1):
        x = s.alphas[t].sqrt() * x + s.betas[t].sqrt() * torch.randn(n, 1, generator=g, dtype=F64)
    a = s.alpha_bars[t_end].item()
    assert abs(x.mean().item() - a ** 0.5 * 0.8) < 4 * ((1 - a) / n) ** 0.5
    assert abs(x.var().item() - (1 - a)) < 4 * (1 - a) * (2 / n) ** 0.5


def test_posterior_matches_gaussian_conditioning():
    """Condition the joint of (x_{t-1}, x_t) given x_0, entry by entry: an independent computation."""
    s = cosine_schedule(100)
    B = 6
    x0, xt = randn(B, 3, seed=2), randn(B, 3, seed=3)
    t = torch.tensor([1, 2, 10, 50, 99, 100])
    mean, var = q_posterior_mean_variance(x0, xt, t, s)
    assert var.shape == (B, 1)
    for i in range(B):
        ti = t[i].item()
        ab_prev, alpha, beta = s.alpha_bars[ti - 1], s.alphas[ti], s.betas[ti]
        # x_{t-1} ~ N(sqrt(ab_prev) x0, 1 - ab_prev); x_t = sqrt(alpha) x_{t-1} + sqrt(beta) e
        mu = torch.stack([ab_prev.sqrt() * x0[i], alpha.sqrt() * ab_prev.sqrt() * x0[i]])   # (2, 3)
        S11, S12, S22 = 1 - ab_prev, alpha.sqrt() * (1 - ab_prev), alpha * (1 - ab_prev) + beta
        torch.testing.assert_close(mean[i], mu[0] + S12 / S22 * (xt[i] - mu[1]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(var[i, 0], S11 - S12**2 / S22, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(posterior_variances(s)[t], var[:, 0], rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------ conversions

def test_conversions_are_mutually_inverse():
    s = SCHED
    xt, eps = randn(8, 2, seed=4), randn(8, 2, seed=5)
    t = torch.arange(1, 9) * 6
    x0 = x0_from_eps(xt, t, eps, s)
    torch.testing.assert_close(eps_from_x0(xt, t, x0, s), eps)
    score = score_from_eps(xt, t, eps, s)
    torch.testing.assert_close(eps_from_score(xt, t, score, s), eps)
    torch.testing.assert_close(x0_from_score(xt, t, score, s), x0)
    # q_sample then x0_from_eps recovers x_0 exactly
    x0_true = randn(8, 2, seed=6)
    xt2, e = q_sample(x0_true, t, s, generator=gen(7), return_eps=True)
    torch.testing.assert_close(x0_from_eps(xt2, t, e, s), x0_true)


def test_tweedie_with_the_oracle_score():
    """x0_from_score fed the exact score is E[x_0 | x_t], computed by the oracle without the score."""
    mix = make_mixture("eight_unequal").to(dtype=F64)
    s = linear_schedule()
    t = torch.tensor([1, 10, 100, 300, 600, 1000])
    xt = q_sample(mix.sample(6, generator=gen(8)), t, s, generator=gen(9))
    ab = s.alpha_bars[t]
    torch.testing.assert_close(x0_from_score(xt, t, mix.marginal_score(xt, ab), s),
                               mix.posterior_mean_x0(xt, ab), rtol=1e-10, atol=1e-10)


def test_eps_fn_from_model_converts_each_parameterisation():
    s = SCHED
    seen = {}

    def model(x, t, y=None):
        seen["t"], seen["y"] = t, y
        return 0.3 * x + t[:, None] / 100

    xt, t = randn(5, 2, seed=10), torch.tensor([1, 5, 10, 20, 50])
    out = model(xt, t.to(F64))
    torch.testing.assert_close(eps_fn_from_model(model, s)(xt, t), out)
    torch.testing.assert_close(eps_fn_from_model(model, s, "x0")(xt, t), eps_from_x0(xt, t, out, s))
    torch.testing.assert_close(eps_fn_from_model(model, s, "score")(xt, t), eps_from_score(xt, t, out, s))
    assert seen["t"].is_floating_point() and torch.equal(seen["t"], t.to(F64))
    y = torch.arange(5)
    eps_fn_from_model(model, s, y=y)(xt, t)
    assert seen["y"] is y


# ------------------------------------------------------------------------------ DDPM / DDIM steps

def _reference_ddpm_step(eps, x, i, betas0, noise, variance="posterior"):
    """Ho et al. (2020) Algorithm 2 with 0-based arrays, as improved-diffusion: index i is step i + 1."""
    alphas = 1 - betas0
    alphas_cumprod = torch.cumprod(alphas, 0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=F64), alphas_cumprod[:-1]])
    posterior_variance = betas0 * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod)
    var = posterior_variance[i] if variance == "posterior" else betas0[i]
    mean = (x - betas0[i] / (1 - alphas_cumprod[i]).sqrt() * eps) / alphas[i].sqrt()
    return mean + (var.sqrt() * noise if i > 0 else 0)


def _reference_ddim_step(eps, x, i, j, betas0, eta, noise):
    """Song et al. (2021) Eq. 12 as diffusers' DDIMScheduler.step: alphas_cumprod[i] is step i + 1,
    j = -1 means the final step, with final_alpha_cumprod = 1."""
    alphas_cumprod = torch.cumprod(1 - betas0, 0)
    alpha_prod_t = alphas_cumprod[i]
    alpha_prod_t_prev = alphas_cumprod[j] if j >= 0 else torch.tensor(1.0, dtype=F64)
    pred_original_sample = (x - (1 - alpha_prod_t).sqrt() * eps) / alpha_prod_t.sqrt()
    variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance.sqrt()
    direction = (1 - alpha_prod_t_prev - std_dev_t**2).sqrt() * eps
    return alpha_prod_t_prev.sqrt() * pred_original_sample + direction + std_dev_t * noise


@pytest.mark.parametrize("sigma", ["posterior", "beta"])
def test_ddpm_step_matches_zero_based_reference(sigma):
    s = linear_schedule(1000)
    betas0 = s.betas[1:]
    for k, t in enumerate([1, 2, 3, 17, 500, 999, 1000]):
        x, eps, z = randn(4, 2, seed=20 + k), randn(4, 2, seed=40 + k), randn(4, 2, seed=60 + k)
        ref = _reference_ddpm_step(eps, x, t - 1, betas0, z, sigma)
        got = ddpm_step(eps, x, torch.full((4,), t), s, sigma=sigma, noise=z)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_zero_based_reference(eta):
    s = cosine_schedule(1000)
    betas0 = s.betas[1:]
    for k, (t, t_prev) in enumerate([(1, 0), (20, 0), (40, 20), (1000, 980), (1000, 999), (2, 1)]):
        x, eps, z = randn(3, 1, 4, 4, seed=k), randn(3, 1, 4, 4, seed=10 + k), randn(3, 1, 4, 4, seed=30 + k)
        ref = _reference_ddim_step(eps, x, t - 1, t_prev - 1, betas0, eta, z)
        got = ddim_step(eps, x, t, t_prev, s, eta=eta, noise=z)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_ddim_eta_one_on_full_sequence_is_ddpm():
    """sigma_t(eta = 1)^2 = beta-tilde_t, and the whole step equals DDPM's (Stratos Cor. 3.2)."""
    s = linear_schedule(1000)
    t = torch.arange(2, 1001)
    torch.testing.assert_close(ddim_sigma(s, t, t - 1, eta=1.0) ** 2, posterior_variances(s)[t],
                               rtol=1e-10, atol=0)
    torch.testing.assert_close(model_variances(s, "posterior")[t], posterior_variances(s)[t])
    assert (ddim_sigma(s, t, t - 1, eta=0.0) == 0).all()
    for k, tk in enumerate([1, 2, 10, 500, 1000]):
        x, eps, z = randn(5, 2, seed=k), randn(5, 2, seed=9 + k), randn(5, 2, seed=19 + k)
        torch.testing.assert_close(ddim_step(eps, x, tk, tk - 1, s, eta=1.0, noise=z),
                                   ddpm_step(eps, x, tk, s, "posterior", noise=z), rtol=1e-9, atol=1e-9)


def test_ddim_eta_zero_is_deterministic():
    s = linear_schedule(100, 1e-3, 0.1)
    eps_fn = lambda x, t: torch.tanh(x) * (t[:, None] / 100)      # noqa: E731  any fixed function
    xT = randn(16, 2, seed=3, dtype=torch.float32)
    a = ddim_sample(eps_fn, xT.shape, s, n_steps=10, generator=gen(1), xT=xT)
    b = ddim_sample(eps_fn, xT.shape, s, n_steps=10, generator=gen(2), xT=xT)
    assert torch.equal(a, b)
    c = ddim_sample(eps_fn, xT.shape, s, n_steps=10, eta=1.0, generator=gen(1), xT=xT)
    d = ddim_sample(eps_fn, xT.shape, s, n_steps=10, eta=1.0, generator=gen(2), xT=xT)
    assert not torch.equal(c, d)
    e = ddpm_sample(eps_fn, xT.shape, s, generator=gen(1), xT=xT)
    f = ddpm_sample(eps_fn, xT.shape, s, generator=gen(2), xT=xT)
    assert not torch.equal(e, f)


def test_clip_x0_is_the_posterior_at_the_clamped_prediction():
    """DDPM with clip_x0 = c: mean = mu_q(x_t, clamp(x0_pred)) computed independently by Bayes;
    DDIM's last step (t_prev = 0) returns the clamped x0_pred itself; a huge c changes nothing."""
    s = linear_schedule(1000)
    x, eps, z = randn(64, 1, 4, 4, seed=1) * 3, randn(64, 1, 4, 4, seed=2), randn(64, 1, 4, 4, seed=3)
    for tk in (2, 300, 999):
        x0_clamped = x0_from_eps(x, tk, eps, s).clamp(-1, 1)
        assert (x0_from_eps(x, tk, eps, s).abs() > 1).any()           # the clip does something
        mean_q, var_q = q_posterior_mean_variance(x0_clamped, x, tk, s)
        expected = mean_q + model_variances(s)[tk].sqrt() * z
        torch.testing.assert_close(ddpm_step(eps, x, tk, s, noise=z, clip_x0=1.0), expected)
        torch.testing.assert_close(ddim_step(eps, x, tk, 0, s, clip_x0=1.0), x0_clamped)
        torch.testing.assert_close(x0_from_eps(x, tk, clipped_eps(eps, x, tk, s, 1.0), s), x0_clamped)
        torch.testing.assert_close(ddpm_step(eps, x, tk, s, noise=z, clip_x0=1e9),
                                   ddpm_step(eps, x, tk, s, noise=z))
    eps_fn = lambda x, t: 5 * torch.tanh(x)                              # noqa: E731  over-shoots
    xT = randn(8, 1, 4, 4, seed=4, dtype=torch.float32)
    for out in (ddim_sample(eps_fn, xT.shape, SCHED, n_steps=10, xT=xT, clip_x0=1.0),
                ddpm_sample(eps_fn, xT.shape, SCHED, generator=gen(0), xT=xT, clip_x0=1.0)):
        assert out.abs().max() <= 1.5                                    # bounded by the clip
    with pytest.raises(ValueError, match="clip_x0"):
        ddim_step(eps, x, 10, 0, s, clip_x0=0.0)


def test_ddim_timesteps():
    assert ddim_timesteps(1000, 50)[:3] == [20, 40, 60] and ddim_timesteps(1000, 50)[-1] == 1000
    assert ddim_timesteps(10, 10) == list(range(1, 11))
    for T, n in [(1000, 7), (1000, 999), (37, 5), (5, 1)]:
        taus = ddim_timesteps(T, n)
        assert len(taus) == n and taus[-1] == T and taus[0] >= 1
        assert all(b > a for a, b in zip(taus, taus[1:]))


def test_samplers_return_trajectories_indexed_by_time():
    s = linear_schedule(20, 1e-3, 0.3)
    eps_fn = lambda x, t: 0.5 * x                                 # noqa: E731
    x0, traj = ddpm_sample(eps_fn, (4, 2), s, generator=gen(0), return_trajectory=True)
    assert traj.shape == (21, 4, 2) and torch.equal(traj[0], x0)
    # trajectory[t] = x_t: the last DDPM step (no noise) maps trajectory[1] to trajectory[0]
    t1 = torch.ones(4, dtype=torch.long)
    torch.testing.assert_close(traj[0], ddpm_step(eps_fn(traj[1], t1), traj[1], t1, s))
    # DDIM: trajectory[i] = x_{tau_i}, tau = (0, 3, 9, 20)
    x0b, trajb = ddim_sample(eps_fn, (4, 2), s, timesteps=[3, 9, 20], generator=gen(0),
                             return_trajectory=True)
    assert trajb.shape == (4, 4, 2) and torch.equal(trajb[0], x0b)
    torch.testing.assert_close(trajb[2], ddim_step(eps_fn(trajb[3], torch.full((4,), 20)), trajb[3], 20, 9, s))
    # a progress bar changes nothing
    torch.testing.assert_close(ddim_sample(eps_fn, (4, 2), s, timesteps=[3, 9, 20], xT=trajb[3], progress=True),
                               x0b)


# ------------------------------------------------------------------------------ the oracle sampler

MIX = make_mixture("eight_unequal")


def _oracle_eps_fn(s):
    return eps_fn_from_score_fn(lambda x, t: MIX.marginal_score(x, s.alpha_bars[t]), s)


@pytest.fixture(scope="module")
def data_log_likelihood():
    return exact_log_likelihood(MIX.sample(20_000, generator=gen(123)), MIX)


@pytest.mark.parametrize("sigma", ["beta", "posterior"])
def test_ddpm_with_exact_score_reproduces_the_mixture(sigma, data_log_likelihood):
    """No training: T = 1000 ancestral steps driven by the exact score recover the mode weights
    and the data's mean log-likelihood. (sigma^2 = beta-tilde under-disperses slightly: about
    7% less variance per mode for this schedule, i.e. ~0.07 nats higher likelihood.)"""
    s = linear_schedule(1000)
    x = ddpm_sample(_oracle_eps_fn(s), (4000, 2), s, sigma=sigma, generator=gen(0))
    cov = mode_coverage(x, MIX)
    assert cov.modes_covered == 8 and cov.max_weight_error < 2.0
    assert abs(exact_log_likelihood(x, MIX) - data_log_likelihood) < 0.15


def test_ddim_with_exact_score_reproduces_the_mixture(data_log_likelihood):
    """50 deterministic DDIM steps: mode weights within 2 pp. The last step jumps from t = 20 to
    x0_pred = E[x_0 | x_20], which shrinks each mode a little, so the likelihood is higher than
    the data's (by ~0.3 nats here); with 1000 steps it is close."""
    s = linear_schedule(1000)
    x = ddim_sample(_oracle_eps_fn(s), (4000, 2), s, n_steps=50, generator=gen(0))
    cov = mode_coverage(x, MIX)
    assert cov.modes_covered == 8 and cov.max_weight_error < 2.0
    assert 0 < exact_log_likelihood(x, MIX) - data_log_likelihood < 0.5
    x = ddim_sample(_oracle_eps_fn(s), (4000, 2), s, n_steps=1000, generator=gen(0))
    assert mode_coverage(x, MIX).max_weight_error < 2.0
    assert abs(exact_log_likelihood(x, MIX) - data_log_likelihood) < 0.15


# ------------------------------------------------------------------------------ ELBO and losses

M_DATA, V_DATA = 0.5, 0.3          # 1-D Gaussian data x_0 ~ N(m, v): everything is exact


def _gauss_score(x, t, s):
    """Exact score of q_t = N(sqrt(ab) m, ab v + 1 - ab)."""
    ab = broadcast(s.alpha_bars[t], x)
    return -(x - ab.sqrt() * M_DATA) / (ab * V_DATA + 1 - ab)


def _exact_expected_terms(x0: float, s, sigma: str):
    """E_q[each -ELBO term] for one x_0, from the optimal denoiser x0_pred = a_t x_t + b_t
    (E[x_0 | x_t] for Gaussian data), written with the textbook formulas only."""
    ab, beta = s.alpha_bars.tolist(), s.betas.tolist()
    T = s.T

    def sq_err(t):  # E[(x_0 - x0_pred(x_t))^2] over x_t ~ q(x_t | x_0)
        a = ab[t] ** 0.5 * V_DATA / (ab[t] * V_DATA + 1 - ab[t])
        b = M_DATA - a * ab[t] ** 0.5 * M_DATA
        return ((1 - a * ab[t] ** 0.5) * x0 - b) ** 2 + a * a * (1 - ab[t])

    tilde = [0.0] + [(1 - ab[t - 1]) / (1 - ab[t]) * beta[t] for t in range(1, T + 1)]
    var = [tilde[t] if sigma == "posterior" else beta[t] for t in range(T + 1)]
    var[1] = tilde[2] if sigma == "posterior" else beta[1]
    prior = 0.5 * (ab[T] * x0**2 - ab[T] - math.log(1 - ab[T]))
    denoising = 0.0
    for t in range(2, T + 1):
        c1 = ab[t - 1] ** 0.5 * beta[t] / (1 - ab[t])             # coefficient of x_0 in mu_q (Luo Eq. 84)
        r = tilde[t] / var[t]
        denoising += 0.5 * (r - 1 - math.log(r)) + c1**2 * sq_err(t) / (2 * var[t])
    recon = 0.5 * math.log(2 * math.pi * var[1]) + sq_err(1) / (2 * var[1])
    return prior, denoising, recon


@pytest.mark.parametrize("sigma", ["posterior", "beta"])
def test_elbo_terms_match_exact_gaussian_elbo(sigma):
    s = SCHED
    eps_fn = eps_fn_from_score_fn(lambda x, t: _gauss_score(x, t, s), s)
    x0_value, n = 1.3, 4000
    x0 = torch.full((n, 1), x0_value, dtype=F64)
    prior, den, rec = _exact_expected_terms(x0_value, s, sigma)
    terms = elbo_terms(eps_fn, x0, s, sigma=sigma, generator=gen(0))
    assert isinstance(terms, ELBOTerms) and terms.total.shape == (n,)
    torch.testing.assert_close(terms.prior, torch.full((n,), prior, dtype=F64))
    for got, want in ((terms.denoising, den), (terms.reconstruction, rec)):
        assert abs(got.mean().item() - want) < 4 * got.std().item() / n**0.5 + 1e-12
    torch.testing.assert_close(terms.total, terms.prior + terms.denoising + terms.reconstruction)
    # the n_t estimate is unbiased
    est = elbo_terms(eps_fn, x0, s, sigma=sigma, n_t=3, generator=gen(1)).denoising
    assert abs(est.mean().item() - den) < 4 * est.std().item() / n**0.5
    # data_scale shifts the reconstruction by D log(scale)
    scaled = elbo_terms(eps_fn, x0[:10], s, sigma=sigma, generator=gen(0), data_scale=2.0)
    plain = elbo_terms(eps_fn, x0[:10], s, sigma=sigma, generator=gen(0))
    torch.testing.assert_close(scaled.reconstruction - plain.reconstruction,
                               torch.full((10,), math.log(2.0), dtype=F64))


@pytest.mark.parametrize("sigma", ["posterior", "beta"])
def test_negative_elbo_bounds_the_negative_log_likelihood(sigma):
    """E[-ELBO] >= E[-log p(x_0)] with the optimal predictor. For this data (v = 0.3) the true
    reverse variances are close to beta_t, so sigma = "beta" gives a tight bound and
    sigma = "posterior" a loose one (2.95 vs 0.82 nats with T = 50)."""
    s = SCHED
    nll = 0.5 * math.log(2 * math.pi * math.e * V_DATA)            # E[-log N(x_0; m, v)]
    # exact: E_x0 of the expected terms; each is quadratic in x_0, so 3-point Gauss-Hermite is exact
    nodes = [(-math.sqrt(3), 1 / 6), (0.0, 2 / 3), (math.sqrt(3), 1 / 6)]
    exact = sum(w * sum(_exact_expected_terms(M_DATA + math.sqrt(V_DATA) * z, s, sigma))
                for z, w in nodes)
    assert exact > nll
    if sigma == "beta":
        assert exact - nll < 0.05
    # Monte Carlo over data and the forward process
    x0 = M_DATA + V_DATA**0.5 * randn(4000, 1, seed=5)
    eps_fn = eps_fn_from_score_fn(lambda x, t: _gauss_score(x, t, s), s)
    total = elbo_terms(eps_fn, x0, s, sigma=sigma, generator=gen(6)).total
    se = total.std().item() / 4000**0.5
    assert abs(total.mean().item() - exact) < 4 * se
    assert total.mean().item() - nll > -4 * se


def _optimal_model(parameterisation, s):
    """A 'network' that outputs the exact optimal prediction in each parameterisation."""
    def model(xt, t_float):
        t = t_float.long()
        score = _gauss_score(xt, t, s)
        if parameterisation == "score":
            return score
        eps = eps_from_score(xt, t, score, s)
        return eps if parameterisation == "eps" else x0_from_eps(xt, t, eps, s)
    return model


@pytest.mark.parametrize("parameterisation", ["eps", "x0", "score"])
@pytest.mark.parametrize("sigma", ["posterior", "beta"])
def test_elbo_loss_is_T_times_the_elbo_term(parameterisation, sigma):
    """At each t >= 2 the 'elbo' loss / T is the closed-form KL of that step (at the same x_t);
    at t = 1 it is -log p(x_0 | x_1). Any predictor will do: use a perturbed optimal one."""
    s = SCHED
    base = _optimal_model(parameterisation, s)
    model = lambda xt, t: base(xt, t) + 0.1 * torch.sin(3 * xt)   # noqa: E731
    x0, eps = randn(12, 3, seed=7), randn(12, 3, seed=8)
    t = torch.tensor([1, 2, 3, 5, 8, 13, 21, 34, 40, 45, 49, 50])
    loss = diffusion_loss_per_example(model, x0, s, parameterisation, "elbo", sigma=sigma, t=t, eps=eps)
    xt = s.alpha_bars[t, None].sqrt() * x0 + (1 - s.alpha_bars[t, None]).sqrt() * eps
    eps_pred = eps_fn_from_model(model, s, parameterisation)(xt, t)
    mu_q, var_q = q_posterior_mean_variance(x0, xt, t, s)
    mu_p, var_p = p_mean_variance(eps_pred, xt, t, s, sigma)
    kl = gaussian_kl(mu_q[1:], var_q[1:].log().expand(11, 3), mu_p[1:], var_p[1:].log().expand(11, 3))
    torch.testing.assert_close(loss[1:] / s.T, kl, rtol=1e-9, atol=1e-9)
    nll = torch.distributions.Normal(mu_p[0], var_p[0].sqrt()).log_prob(x0[0]).sum().neg()
    torch.testing.assert_close(loss[0] / s.T, nll, rtol=1e-9, atol=1e-9)


def test_elbo_weights_formulas():
    s = linear_schedule(1000)
    t = torch.arange(2, 1001)
    snr = s.snr(torch.arange(0, 1001))
    w_x0 = elbo_weights(s, "x0", "posterior")
    torch.testing.assert_close(w_x0[t], 0.5 * (snr[t - 1] - snr[t]), rtol=1e-9, atol=0)  # Luo Eq. 110
    for sigma in ("posterior", "beta"):
        var = model_variances(s, sigma)
        beta, ab = s.betas, s.alpha_bars
        stratos = beta**2 / (2 * var * (1 - beta) * (1 - ab))                            # Stratos Eq. 18
        torch.testing.assert_close(elbo_weights(s, "eps", sigma)[1:], stratos[1:])
        luo = (1 - s.alphas) ** 2 / (2 * var * s.alphas)                                  # Luo Eq. 148
        torch.testing.assert_close(elbo_weights(s, "score", sigma)[1:], luo[1:])
        assert elbo_weights(s, "eps", sigma)[0] == 0
    assert model_variances(s, "posterior")[1] == posterior_variances(s)[2]


def test_elbo_loss_expectation_is_denoising_plus_reconstruction():
    """E_t,x_t[loss] = sum of the denoising KLs + the reconstruction term (Monte Carlo)."""
    s = SCHED
    x0_value, n = -0.4, 40_000
    _, den, rec = _exact_expected_terms(x0_value, s, "posterior")
    x0 = torch.full((n, 1), x0_value, dtype=F64)
    loss = diffusion_loss_per_example(_optimal_model("eps", s), x0, s, "eps", "elbo", generator=gen(3))
    assert abs(loss.mean().item() - (den + rec)) < 4 * loss.std().item() / n**0.5


def test_simple_loss_is_the_unweighted_mse():
    s = SCHED
    x0, eps, t = randn(6, 2, seed=1), randn(6, 2, seed=2), torch.tensor([1, 2, 3, 10, 30, 50])
    model = lambda xt, tf: xt * tf[:, None] / 50                 # noqa: E731
    xt = q_sample(x0, t, s, eps=eps)
    pred = model(xt, t.to(F64))
    for p, target in (("eps", eps), ("x0", x0), ("score", score_from_eps(xt, t, eps, s))):
        got = diffusion_loss_per_example(model, x0, s, p, t=t, eps=eps)
        torch.testing.assert_close(got, (pred - target).pow(2).mean(1))
    # random t and eps from the generator: reproducible, and a differentiable scalar
    net = nn.Linear(2, 2).double()
    fn = lambda xt, tf: net(xt)                                   # noqa: E731
    a = diffusion_loss(fn, x0, s, generator=gen(5))
    b = diffusion_loss(fn, x0, s, generator=gen(5))
    assert a.ndim == 0 and torch.equal(a, b)
    a.backward()
    assert net.weight.grad is not None and torch.isfinite(net.weight.grad).all()


# ------------------------------------------------------------------------------ shapes

@pytest.mark.parametrize("shape", [(5, 2), (5, 1, 28, 28)])
def test_everything_works_for_points_and_images(shape):
    s = linear_schedule(10, 1e-3, 0.3)
    x0, eps = torch.randn(shape, generator=gen(0)), torch.randn(shape, generator=gen(1))
    t = torch.tensor([1, 2, 5, 9, 10])
    xt = q_sample(x0, t, s, eps=eps)
    assert xt.shape == shape and xt.dtype == torch.float32
    mean, var = q_posterior_mean_variance(x0, xt, t, s)
    assert mean.shape == shape and var.shape == (5,) + (1,) * (len(shape) - 1)
    for f in (x0_from_eps, eps_from_x0, score_from_eps, eps_from_score, x0_from_score):
        assert f(xt, t, eps, s).shape == shape
    mean, var = p_mean_variance(eps, xt, t, s)
    assert mean.shape == shape and var.dtype == torch.float32
    assert ddpm_step(eps, xt, t, s, generator=gen(2)).shape == shape
    assert ddim_step(eps, xt, t, t - 1, s, eta=0.5, generator=gen(2)).shape == shape

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor(0.5))

        def forward(self, x, t, y=None):
            return self.w * x + broadcast(t, x) / 10

    model = Tiny()
    for p in ("eps", "x0", "score"):
        for w in ("simple", "elbo"):
            loss = diffusion_loss(model, x0, s, p, w, generator=gen(3))
            assert loss.ndim == 0 and torch.isfinite(loss)
    eps_fn = eps_fn_from_model(model, s)
    assert ddpm_sample(eps_fn, shape, s, generator=gen(4)).shape == shape
    assert ddim_sample(eps_fn, shape, s, n_steps=3, eta=0.3, generator=gen(4)).shape == shape
    terms = elbo_terms(eps_fn, x0, s, generator=gen(5))
    assert terms.total.shape == (5,) and torch.isfinite(terms.total).all()


# ------------------------------------------------------------------------------ bad inputs

def test_bad_inputs_raise():
    s = linear_schedule(10, 1e-3, 0.3)
    x = torch.randn(3, 2)
    eps_fn = lambda xt, t: torch.zeros_like(xt)                   # noqa: E731
    for bad_t in (0, 11, torch.tensor([1, 0, 2]), torch.tensor([1, 2, 11])):
        with pytest.raises(ValueError, match="t must lie in 1..T"):
            q_sample(x, bad_t, s)
        with pytest.raises(ValueError, match="t must lie in 1..T"):
            ddpm_step(x, x, bad_t, s)
    with pytest.raises(TypeError, match="t"):
        q_sample(x, torch.tensor([1.0, 2.0, 3.0]), s)
    with pytest.raises(ValueError, match="t"):
        q_sample(x, torch.tensor([1, 2]), s)                      # wrong batch size
    with pytest.raises(ValueError, match="x0"):
        q_sample(torch.randn(3), 1, s)                            # no batch dimension
    with pytest.raises(ValueError, match="eta"):
        ddim_step(x, x, 5, 4, s, eta=-0.1)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(eps_fn, (3, 2), s, eta=-1.0)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(x, x, 5, 5, s)
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(x, x, 5, -1, s)
    for bad in ([3, 3, 10], [5, 2], [0, 5], [4, 11], []):
        with pytest.raises(ValueError, match="timesteps"):
            ddim_sample(eps_fn, (3, 2), s, timesteps=bad)
    with pytest.raises(ValueError, match="n_steps"):
        ddim_timesteps(10, 11)
    with pytest.raises(ValueError, match="n_steps"):
        ddim_timesteps(10, 0)
    with pytest.raises(ValueError, match="timesteps or n_steps"):
        ddim_sample(eps_fn, (3, 2), s, timesteps=[5, 10], n_steps=2)
    with pytest.raises(ValueError, match="parameterisation"):
        diffusion_loss(lambda xt, t: xt, x, s, parameterisation="v")
    with pytest.raises(ValueError, match="weighting"):
        diffusion_loss(lambda xt, t: xt, x, s, weighting="snr")
    with pytest.raises(ValueError, match="sigma"):
        ddpm_sample(eps_fn, (3, 2), s, sigma="large")
    with pytest.raises(ValueError, match="parameterisation"):
        eps_fn_from_model(lambda xt, t: xt, s, "velocity")
    with pytest.raises(ValueError, match="parameterisation"):
        elbo_weights(s, "v")
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(eps_fn, (3,), s)
    with pytest.raises(ValueError, match="noise"):
        ddpm_step(x, x, 5, s, noise=torch.randn(2, 2))
    with pytest.raises(ValueError, match="data_scale"):
        elbo_terms(eps_fn, x, s, data_scale=0.0)
    with pytest.raises(ValueError, match="model output"):
        diffusion_loss(lambda xt, t: xt[:, :1], x, s)
