"""Exercises of notebook 01 (the evidence lower bound): a Monte Carlo ELBO estimator, the exact
posterior of the linear-Gaussian model, and the importance-weighted bound.

The learner's functions take plain tensors; the `reference_*` functions below give the library's
answer in the same signature, by way of `course_lib.elbo`.
"""
from __future__ import annotations

import math

import torch

from ..elbo import LinearGaussianModel, iwae_from_log_weights, log_normal
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded

F64 = torch.float64


# ----------------------------------------------------------- the library's answers
def reference_elbo_mc(log_joint, q_mean: torch.Tensor, q_std: torch.Tensor,
                      eps: torch.Tensor) -> torch.Tensor:
    """1/M sum_m [log p(x, z_m) - log q(z_m)], z_m = q_mean + q_std eps_m  (Luo 2022, Eq. 8).

    eps (M, ...) standard normal; q_mean, q_std (...); log_joint maps z (M, ...) to (M, ...).
    Returns the estimate, shape (...).
    """
    z = q_mean + q_std * eps                                       # (M, ...)
    return (log_joint(z) - log_normal(z, q_mean, q_std ** 2)).mean(0)


def reference_posterior(x: torch.Tensor, w: float, b: float, s: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of p(z | x) for z ~ N(0, 1), x | z ~ N(w z + b, s^2), each shaped like x."""
    return LinearGaussianModel(w, b, s).posterior(x)


def reference_iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K sum_k exp(log_w[..., k])), stable (Burda et al. 2016, Eq. 8): (..., K) -> (...)."""
    return iwae_from_log_weights(log_w)


# ------------------------------------------------------------ shared test inputs
def _problem(shape: tuple, seed: int, w: float = 1.3, b: float = -0.4, s: float = 0.6):
    """A model, observed x of `shape`, and a Gaussian q (mean, std) per x, in float64."""
    g = seeded(seed)
    model = LinearGaussianModel(w, b, s)
    x = 2.0 * torch.randn(shape, generator=g, dtype=F64)
    q_mean = torch.randn(shape, generator=g, dtype=F64)
    q_std = 0.3 + torch.rand(shape, generator=g, dtype=F64)
    log_joint = lambda z: model.log_joint(x, z)                    # noqa: E731  (M, ...) -> (M, ...)
    return model, x, q_mean, q_std, log_joint


# ------------------------------------------------------------------ 01.elbo_mc
ELBO = exercise("01.elbo_mc", "Monte Carlo estimate of the ELBO with reparameterised samples")


@ELBO.case("shape", "M draws for B observations, eps (M, B), give one ELBO per observation, (B,)")
def _elbo_shape(fn):
    _, x, m, sd, lj = _problem((5,), seed=11)
    eps = torch.randn(40, 5, generator=seeded(12), dtype=F64)
    expect_shape(fn(lj, m, sd, eps), (5,), "elbo_mc with eps of shape (40, 5)")


@ELBO.case("value", "equals the average of log p(x, z) - log q(z) at z = q_mean + q_std * eps", points=2)
def _elbo_value(fn):
    _, x, m, sd, lj = _problem((6,), seed=13)
    eps = torch.randn(25, 6, generator=seeded(14), dtype=F64)
    out = fn(lj, m, sd, eps)
    ref = reference_elbo_mc(lj, m, sd, eps)
    expect_shape(out, ref.shape, "the ELBO estimate")
    missing_entropy = lj(m + sd * eps).mean(0)
    if torch.allclose(out.double(), missing_entropy, atol=1e-6):
        raise Mismatch("you returned the average of log p(x, z) only: subtract log q(z), the "
                       "density of q at the same samples (the entropy term of the ELBO)")
    as_variance = reference_elbo_mc(lj, m, sd.sqrt(), eps)
    wrong_log_q = (lj(m + sd * eps) - log_normal(m + sd * eps, m, sd)).mean(0)
    if (torch.allclose(out.double(), as_variance, atol=1e-6)
            or torch.allclose(out.double(), wrong_log_q, atol=1e-6)):
        raise Mismatch("q_std is a standard deviation: z = q_mean + q_std * eps and "
                       "log q(z) = log N(z; q_mean, q_std^2)")
    expect_close(out, ref, "the ELBO estimate")


@ELBO.case("batching", "works for a grid of observations: eps (M, 3, 4) gives (3, 4)")
def _elbo_batching(fn):
    _, x, m, sd, lj = _problem((3, 4), seed=15)
    eps = torch.randn(30, 3, 4, generator=seeded(16), dtype=F64)
    expect_close(fn(lj, m, sd, eps), reference_elbo_mc(lj, m, sd, eps), "the ELBO estimate on (3, 4)")


@ELBO.case("gradient", "the estimate is differentiable in q_mean and q_std (reparameterisation)")
def _elbo_gradient(fn):
    _, x, m, sd, lj = _problem((4,), seed=17)
    eps = torch.randn(50, 4, generator=seeded(18), dtype=F64)
    m1, sd1 = m.clone().requires_grad_(True), sd.clone().requires_grad_(True)
    out = expect_tensor(fn(lj, m1, sd1, eps), "the ELBO estimate")
    if not out.requires_grad:
        raise Mismatch("the estimate carries no gradient: compute z = q_mean + q_std * eps with "
                       "torch operations (no .detach(), no torch.no_grad())")
    got = torch.autograd.grad(out.sum(), (m1, sd1), allow_unused=True)
    if any(g is None for g in got):
        raise Mismatch("the estimate does not depend on both q_mean and q_std")
    m2, sd2 = m.clone().requires_grad_(True), sd.clone().requires_grad_(True)
    ref = torch.autograd.grad(reference_elbo_mc(lj, m2, sd2, eps).sum(), (m2, sd2))
    expect_close(got[0], ref[0], "d ELBO / d q_mean")
    expect_close(got[1], ref[1], "d ELBO / d q_std")


@ELBO.case("unbiased", "with many draws it agrees with the closed-form ELBO within 5 standard errors")
def _elbo_unbiased(fn):
    model, x, m, sd, lj = _problem((3,), seed=19, w=-0.8, b=1.0, s=1.2)
    M = 20_000
    eps = torch.randn(M, 3, generator=seeded(20), dtype=F64)
    out = expect_shape(fn(lj, m, sd, eps), (3,), "the ELBO estimate")
    exact = model.elbo(x, m, sd ** 2)
    z = m + sd * eps
    se = (lj(z) - log_normal(z, m, sd ** 2)).std(0) / math.sqrt(M)
    dist = ((out.detach().double() - exact).abs() / se).max().item()
    if not dist <= 5:
        raise Mismatch(f"the estimate is {dist:.1f} standard errors from the closed-form ELBO "
                       f"{exact.tolist()}; got {out.detach().tolist()}")


# ---------------------------------------------------------------- 01.posterior
POST = exercise("01.posterior", "Exact posterior p(z | x) of the linear-Gaussian model")


def _mean_var(fn, x, w, b, s):
    out = fn(x, w, b, s)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch("return a pair (mean, var)")
    mean, var = out
    return expect_tensor(mean, "the posterior mean"), torch.as_tensor(var, dtype=x.dtype)


def _like(var: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar variance broadcast to the shape of x (the shape case checks the shape itself)."""
    return var.expand_as(x) if var.ndim == 0 else var


@POST.case("shape", "x of shape (B,) gives a mean and a variance of shape (B,)")
def _post_shape(fn):
    x = torch.randn(7, generator=seeded(21), dtype=F64)
    mean, var = _mean_var(fn, x, 0.9, 0.2, 0.5)
    expect_shape(mean, (7,), "the posterior mean")
    expect_shape(var, (7,), "the posterior variance (use torch.full_like(x, ...))")


@POST.case("value", "matches Gaussian conditioning of the joint of (z, x)", points=2)
def _post_value(fn):
    x = 3.0 * torch.randn(9, generator=seeded(22), dtype=F64)
    w, b, s = 1.7, 0.6, 0.9
    mean, var = _mean_var(fn, x, w, b, s)
    ref_mean, ref_var = reference_posterior(x, w, b, s)
    if mean.shape == ref_mean.shape and torch.allclose(mean.double(), (x - b) / w, atol=1e-6):
        raise Mismatch("the mean (x - b) / w ignores the prior: it is the maximum-likelihood "
                       "z, not the posterior mean; the prior N(0, 1) pulls it towards 0")
    expect_close(mean, ref_mean, "the posterior mean")
    var = _like(var, x)
    if var.shape == x.shape and torch.allclose(var.double(), ref_var.sqrt(), atol=1e-6):
        raise Mismatch("you returned the standard deviation; the exercise asks for the variance")
    expect_close(var, ref_var, "the posterior variance")


@POST.case("batching", "works for any shape of x, e.g. (4, 5), and for a negative w")
def _post_batching(fn):
    x = torch.randn(4, 5, generator=seeded(23), dtype=F64)
    mean, var = _mean_var(fn, x, -0.7, 1.1, 1.3)
    ref_mean, ref_var = reference_posterior(x, -0.7, 1.1, 1.3)
    expect_close(mean, ref_mean, "the posterior mean for x of shape (4, 5)")
    expect_close(_like(var, x), ref_var, "the posterior variance for x of shape (4, 5)")


@POST.case("limits", "a very noisy observation leaves the prior N(0, 1); a precise one pins z down")
def _post_limits(fn):
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=F64)
    mean, var = _mean_var(fn, x, 1.0, 0.0, 1e3)
    expect_close(mean, torch.zeros(3, dtype=F64), "the posterior mean when s is huge", atol=1e-4)
    expect_close(_like(var, x), torch.ones(3, dtype=F64), "the posterior variance when s is huge",
                 atol=1e-4)
    mean, var = _mean_var(fn, x, 2.0, 0.5, 1e-3)
    expect_close(mean, (x - 0.5) / 2.0, "the posterior mean when s is tiny", atol=1e-4)


# --------------------------------------------------------------------- 01.iwae
IWAE = exercise("01.iwae", "Importance-weighted bound from log-weights (log-mean-exp)")


@IWAE.case("shape", "a (B, K) tensor of log-weights gives one bound per row, (B,)")
def _iwae_shape(fn):
    log_w = torch.randn(6, 10, generator=seeded(31), dtype=F64)
    expect_shape(fn(log_w), (6,), "iwae_bound on (6, 10) log-weights")


@IWAE.case("value", "equals log of the mean of the weights exp(log_w) over the K samples", points=2)
def _iwae_value(fn):
    log_w = torch.randn(8, 12, generator=seeded(32), dtype=F64) - 2.0
    out = expect_shape(fn(log_w), (8,), "the bound")
    if torch.allclose(out.double(), torch.logsumexp(log_w, -1), atol=1e-6):
        raise Mismatch("that is log of the SUM of the weights; the bound averages them: "
                       "subtract log K")
    if torch.allclose(out.double(), log_w.mean(-1), atol=1e-6):
        raise Mismatch("that is the mean of the log-weights (the K-sample ELBO estimate); the "
                       "bound is the log of the mean of the weights")
    expect_close(out, reference_iwae_bound(log_w), "the bound")


@IWAE.case("stability", "log-weights around -1000 (exp underflows to 0) give finite, exact values",
           points=2)
def _iwae_stability(fn):
    log_w = torch.randn(5, 64, generator=seeded(33), dtype=F64) * 3 - 1000.0
    out = expect_tensor(fn(log_w), "the bound")
    if not torch.isfinite(out).all():
        raise Mismatch("the bound is not finite for log-weights near -1000: exp(-1000) is 0 in "
                       "floating point; subtract the largest log-weight before exponentiating "
                       "(or use torch.logsumexp)")
    expect_close(out, reference_iwae_bound(log_w), "the bound for log-weights near -1000")
    big = torch.randn(3, 16, generator=seeded(34)) + 500.0           # float32: exp(500) overflows
    expect_close(fn(big), reference_iwae_bound(big), "the bound for float32 log-weights near +500",
                 atol=1e-3)


@IWAE.case("K = 1", "with one sample the bound is the log-weight itself (the one-sample ELBO)")
def _iwae_k1(fn):
    log_w = torch.randn(7, 1, generator=seeded(35), dtype=F64)
    expect_close(fn(log_w), log_w[:, 0], "the bound with K = 1")


@IWAE.case("batching", "any leading shape: (2, 3, K) log-weights give (2, 3)")
def _iwae_batching(fn):
    log_w = torch.randn(2, 3, 20, generator=seeded(36), dtype=F64)
    expect_close(fn(log_w), reference_iwae_bound(log_w), "the bound on (2, 3, 20) log-weights")
