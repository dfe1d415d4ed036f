"""Exercises of notebook 00 (Toolkit): Gaussian KL, reparameterised sampler, Monte Carlo."""
from __future__ import annotations

import torch
from torch.distributions import Normal, kl_divergence

from ..gaussians import gaussian_kl, mc_estimate, reparameterize
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, seeded


def _diag_params(*shape: int, seed: int):
    g = seeded(seed)
    mu_q, mu_p = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    lv_q, lv_p = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    return mu_q, lv_q, mu_p, lv_p


# ---------------------------------------------------------------- Gaussian KL
KL = exercise("00.gaussian_kl", "KL divergence between diagonal Gaussians")


@KL.case("shape", "a (B, D) batch gives one KL per row, shape (B,)")
def _kl_shape(fn):
    expect_shape(fn(*_diag_params(5, 3, seed=1)), (5,), "gaussian_kl on (5, 3) inputs")


@KL.case("value", "matches torch.distributions.kl_divergence summed over D", points=2)
def _kl_value(fn):
    mu_q, lv_q, mu_p, lv_p = _diag_params(7, 4, seed=2)
    ref = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    expect_close(fn(mu_q, lv_q, mu_p, lv_p), ref, "KL(q || p)")


@KL.case("batching", "works for any leading batch shape, e.g. (4, 6, 2) -> (4, 6)")
def _kl_batching(fn):
    args = _diag_params(4, 6, 2, seed=3)
    expect_close(fn(*args), gaussian_kl(*args), "KL on a (4, 6, 2) batch")


@KL.case("properties", "KL(q || q) = 0 and KL(q || p) >= 0")
def _kl_properties(fn):
    mu_q, lv_q, mu_p, lv_p = _diag_params(50, 3, seed=4)
    expect_close(fn(mu_q, lv_q, mu_q, lv_q), torch.zeros(50), "KL(q || q)")
    if (fn(mu_q, lv_q, mu_p, lv_p) < -1e-6).any():
        raise Mismatch("KL(q || p) came out negative for some rows; a KL divergence never is")


# ------------------------------------------------------ reparameterised sampler
REPARAM = exercise("00.reparameterize", "Reparameterised Gaussian sampler")


@REPARAM.case("value", "z = mu + sigma * eps with sigma = exp(logvar / 2)", points=2)
def _rep_value(fn):
    mu, lv, eps, _ = _diag_params(6, 3, seed=5)
    expect_close(fn(mu, lv, eps), reparameterize(mu, lv, eps), "z")


@REPARAM.case("gradient", "z is differentiable: dz/dmu = 1 and dz/dlogvar = sigma * eps / 2")
def _rep_gradient(fn):
    mu, lv, eps, _ = _diag_params(4, 2, seed=6)
    mu.requires_grad_(True)
    lv.requires_grad_(True)
    z = fn(mu, lv, eps)
    if not isinstance(z, torch.Tensor) or not z.requires_grad:
        raise Mismatch("z carries no gradient: build it from mu and logvar with torch operations")
    d_mu, d_lv = torch.autograd.grad(z.sum(), (mu, lv), allow_unused=True)
    if d_mu is None or d_lv is None:
        raise Mismatch("z does not depend on both mu and logvar")
    expect_close(d_mu, torch.ones_like(mu), "dz/dmu")
    expect_close(d_lv, 0.5 * (0.5 * lv).exp().detach() * eps, "dz/dlogvar")


@REPARAM.case("distribution", "with eps ~ N(0, I), z has mean mu and standard deviation sigma")
def _rep_distribution(fn):
    mu, lv = torch.tensor([1.5, -2.0]), torch.tensor([0.0, -1.0])
    eps = torch.randn(200_000, 2, generator=seeded(7))
    z = fn(mu.expand(200_000, 2), lv.expand(200_000, 2), eps)
    expect_close(z.mean(0), mu, "mean of z", atol=0.02, rtol=0)
    expect_close(z.std(0), (0.5 * lv).exp(), "standard deviation of z", atol=0.02, rtol=0)


# --------------------------------------------------------------- Monte Carlo
MC = exercise("00.mc_estimate", "Monte Carlo estimate with its standard error")


@MC.case("value", "estimate = mean of f over the samples", points=2)
def _mc_value(fn):
    x = torch.randn(1000, generator=seeded(8))
    f = lambda v: v.pow(2) / 2  # noqa: E731
    est, _ = fn(f, x)
    expect_close(est, f(x).mean(), "estimate of E[X^2 / 2]")


@MC.case("standard error", "standard error = sample std (ddof = 1) / sqrt(M)")
def _mc_stderr(fn):
    x = torch.rand(37, generator=seeded(9))
    _, se = fn(torch.exp, x)
    expect_close(se, mc_estimate(torch.exp, x)[1], "standard error")


@MC.case("batching", "f with K outputs per sample, (M, K), gives K estimates and K errors")
def _mc_batching(fn):
    x = torch.randn(500, 3, generator=seeded(10))
    est, se = fn(lambda v: v * torch.tensor([1.0, 2.0, 3.0]), x)
    ref_est, ref_se = mc_estimate(lambda v: v * torch.tensor([1.0, 2.0, 3.0]), x)
    expect_close(est, ref_est, "estimates")
    expect_close(se, ref_se, "standard errors")
