"""Exercises of notebook 05 (the diffusion ELBO and the true posterior): the posterior
q(x_{t-1} | x_t, x_0), the denoising-matching KL of one step, and the SNR-weighted loss.

The learner's functions take plain tensors in the course notation (`alpha_bars` indexed t = 0..T
with alpha_bars[0] = 1; t a (B,) integer tensor, one step per example); the `reference_*`
functions below give the library's answer in the same signature, by way of
`course_lib.diffusion`, `course_lib.schedules` and `course_lib.gaussians`.
"""
from __future__ import annotations

import torch

from ..diffusion import q_posterior_mean_variance, q_sample
from ..gaussians import gaussian_kl
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded
from ..schedules import (Schedule, cosine_schedule, linear_schedule,
                         schedule_from_alpha_bars, schedule_from_betas)

F64 = torch.float64


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)                               # (B, ...) -> (B, D)


# ----------------------------------------------------------- the library's answers
def reference_posterior_mean_variance(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                                      alpha_bars: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (B, ...) and variance (B, 1, ..., 1) of q(x_{t-1} | x_t, x_0)  (Luo 2022, Eq. 84)."""
    return q_posterior_mean_variance(x0, xt, t, schedule_from_alpha_bars(alpha_bars))


def reference_denoising_kl(mu_q: torch.Tensor, mu_p: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, sigma2 I) || N(mu_p, sigma2 I)) per example (B,), sigma2 (B,)  (Luo Eq. 87-92)."""
    logvar = sigma2.to(mu_q.dtype).log()[:, None].expand(_flat(mu_q).shape)
    return gaussian_kl(_flat(mu_q), logvar, _flat(mu_p), logvar)


def reference_snr_weighted_loss(x0: torch.Tensor, x0_pred: torch.Tensor, t: torch.Tensor,
                                alpha_bars: torch.Tensor) -> torch.Tensor:
    """1/2 (SNR(t-1) - SNR(t)) ||x_0 - x0_pred||^2 per example (B,), t in 2..T  (Luo Eq. 108-110)."""
    s = schedule_from_alpha_bars(alpha_bars)
    weight = 0.5 * (s.snr(t - 1) - s.snr(t))                       # (B,) float64
    return weight.to(x0.dtype) * _flat(x0 - x0_pred).pow(2).sum(1)


def _kl_with_posterior_variance(x0, x0_pred, t, alpha_bars, seed: int) -> torch.Tensor:
    """KL(q(x_{t-1} | x_t, x_0) || N(mu_q(x_t, x0_pred), beta-tilde_t I)) at a sampled x_t, via
    the library: an independent reference for the SNR-weighted loss."""
    s = schedule_from_alpha_bars(alpha_bars)
    xt = q_sample(x0, t, s, generator=seeded(seed))
    mu_q, var = q_posterior_mean_variance(x0, xt, t, s)
    mu_p, _ = q_posterior_mean_variance(x0_pred, xt, t, s)
    logvar = var.log().expand_as(mu_q)
    return gaussian_kl(_flat(mu_q), _flat(logvar), _flat(mu_p), _flat(logvar))


# -------------------------------------------------------------- posterior q(x_{t-1} | x_t, x_0)
POSTERIOR = exercise("05.posterior", "Mean and variance of the true posterior q(x_{t-1} | x_t, x_0)")


def _posterior_inputs(shape, T: int, seed: int, t_low: int = 1):
    g = seeded(seed)                                                 # float64: exact references
    x0 = torch.randn(*shape, generator=g, dtype=F64)
    xt = torch.randn(*shape, generator=g, dtype=F64)
    t = torch.randint(t_low, T + 1, (shape[0],), generator=g)
    return x0, xt, t


def _as_pair(out, what: str):
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise Mismatch(f"{what} should return a pair (mean, variance), got {type(out).__name__}")
    return expect_tensor(out[0], "the mean"), expect_tensor(out[1], "the variance")


def _full_variance(var: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The variance expanded to x's shape; it must be one value per example, (B, 1, ..., 1)."""
    per_example = (x.shape[0],) + (1,) * (x.ndim - 1)
    if tuple(var.shape) not in (per_example, tuple(x.shape)):
        raise Mismatch(f"the variance should have shape {per_example} (one value per example, "
                       f"broadcastable against x) or {tuple(x.shape)}, got {tuple(var.shape)}")
    return var.expand(x.shape)


@POSTERIOR.case("shape", "2-D points (B, 2): mean (B, 2), variance (B, 1)")
def _post_shape(fn):
    s = cosine_schedule(40)
    x0, xt, t = _posterior_inputs((9, 2), 40, seed=51)
    mean, var = _as_pair(fn(x0, xt, t, s.alpha_bars), "posterior_mean_variance")
    expect_shape(mean, (9, 2), "the posterior mean of (9, 2) points")
    _full_variance(var, x0)


@POSTERIOR.case("value", "each point uses its own t: matches Luo Eq. 84 on (B, 2)", points=2)
def _post_value(fn):
    s = linear_schedule(100, 1e-3, 0.05)
    x0, xt, t = _posterior_inputs((16, 2), 100, seed=52, t_low=2)
    mean, var = _as_pair(fn(x0, xt, t, s.alpha_bars), "posterior_mean_variance")
    ref_mean, ref_var = reference_posterior_mean_variance(x0, xt, t, s.alpha_bars)
    if mean.shape == x0.shape:
        ab_t = s.alpha_bars[t][:, None]
        ab_prev = s.alpha_bars[t - 1][:, None]
        beta = 1 - ab_t / ab_prev
        wrong = (ab_prev.sqrt() * beta * x0 + ab_t.sqrt() * (1 - ab_prev) * xt) / (1 - ab_t)
        if torch.allclose(mean.double(), wrong.double(), atol=1e-5, rtol=1e-4):
            raise Mismatch("x_t's coefficient uses sqrt(alpha-bar_t); it should be sqrt(alpha_t) "
                           "with alpha_t = alpha-bar_t / alpha-bar_{t-1} (one step, not all t)")
    expect_close(mean, ref_mean, "the posterior mean mu_q(x_t, x_0)")
    expect_close(_full_variance(var, x0), ref_var.expand_as(x0), "the posterior variance beta-tilde_t")


@POSTERIOR.case("batching", "images (B, 1, 28, 28) with per-image t: the same code path")
def _post_images(fn):
    s = cosine_schedule(50)
    x0, xt, t = _posterior_inputs((5, 1, 28, 28), 50, seed=53)
    mean, var = _as_pair(fn(x0, xt, t, s.alpha_bars), "posterior_mean_variance")
    ref_mean, ref_var = reference_posterior_mean_variance(x0, xt, t, s.alpha_bars)
    expect_close(mean, ref_mean, "the posterior mean for a batch of images")
    expect_close(_full_variance(var, x0), ref_var.expand_as(x0), "the posterior variance for images")


@POSTERIOR.case("indexing", "t = 1: q(x_0 | x_1, x_0) is a point mass at x_0 (mean x_0, variance 0)")
def _post_t1(fn):
    s = linear_schedule(1000)
    x0, xt, _ = _posterior_inputs((6, 2), 1000, seed=54)
    ones = torch.ones(6, dtype=torch.long)
    mean, var = _as_pair(fn(x0, xt, ones, s.alpha_bars), "posterior_mean_variance")
    expect_shape(mean, (6, 2), "the posterior mean at t = 1")
    if not torch.allclose(mean.double(), x0.double(), atol=1e-7) or float(var.abs().max()) > 1e-9:
        raise Mismatch("at t = 1 the posterior should be the point mass at x_0 (alpha-bar_0 = 1): "
                       "check that x_{t-1} uses alpha_bars[t - 1] and x_t uses alpha_bars[t]")
    T = torch.full((6,), 1000, dtype=torch.long)
    ref_mean, _ = reference_posterior_mean_variance(x0, xt, T, s.alpha_bars)
    mean_T, _ = _as_pair(fn(x0, xt, T, s.alpha_bars), "posterior_mean_variance")
    expect_close(mean_T, ref_mean, "the posterior mean at t = T")


# ------------------------------------------------------------------- denoising KL, one step
DENOISING_KL = exercise("05.denoising_kl", "KL between two Gaussians of equal variance: a mean regression")


def _kl_inputs(shape, seed: int):
    g = seeded(seed)
    mu_q, mu_p = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    sigma2 = torch.rand(shape[0], generator=g) * 0.5 + 0.01         # (B,) one variance per example
    return mu_q, mu_p, sigma2


@DENOISING_KL.case("shape", "one KL per example: (B, 2) -> (B,)")
def _dkl_shape(fn):
    expect_shape(fn(*_kl_inputs((7, 2), seed=61)), (7,), "the KL of (7, 2) means")


@DENOISING_KL.case("value", "||mu_q - mu_p||^2 / (2 sigma2), each example with its own sigma2", points=2)
def _dkl_value(fn):
    mu_q, mu_p, sigma2 = _kl_inputs((12, 3), seed=62)
    out = fn(mu_q, mu_p, sigma2)
    ref = reference_denoising_kl(mu_q, mu_p, sigma2)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        sq = _flat(mu_q - mu_p).pow(2).sum(1)
        if torch.allclose(out.double(), (sq / (2 * sigma2.sqrt())).double(), rtol=1e-4):
            raise Mismatch("divide by the variance sigma2, not by the standard deviation")
        if torch.allclose(out.double(), (sq / sigma2).double(), rtol=1e-4):
            raise Mismatch("the KL has a factor 1/2: ||mu_q - mu_p||^2 / (2 sigma2)")
    expect_close(out, ref, "KL(N(mu_q, sigma2 I) || N(mu_p, sigma2 I))")


@DENOISING_KL.case("batching", "images (B, 1, 28, 28): the KL sums (not averages) over all 784 pixels")
def _dkl_images(fn):
    mu_q, mu_p, sigma2 = _kl_inputs((4, 1, 28, 28), seed=63)
    expect_close(fn(mu_q, mu_p, sigma2), reference_denoising_kl(mu_q, mu_p, sigma2),
                 "the KL of a batch of images")


@DENOISING_KL.case("properties", "agrees with the general Gaussian KL; 0 when the means agree")
def _dkl_properties(fn):
    mu_q, mu_p, sigma2 = _kl_inputs((20, 2), seed=64)
    expect_close(fn(mu_q, mu_q, sigma2), torch.zeros(20), "KL(q || q)")
    logvar = sigma2.log()[:, None].expand(20, 2)
    expect_close(fn(mu_q, mu_p, sigma2), gaussian_kl(mu_q, logvar, mu_p, logvar),
                 "the KL against gaussians.gaussian_kl with equal variances")


# ----------------------------------------------------------------- SNR-weighted loss
SNR_LOSS = exercise("05.snr_loss", "The denoising term as an SNR-weighted x_0 regression")


def _snr_inputs(shape, T: int, seed: int):
    g = seeded(seed)                                                 # float64: exact references
    x0 = torch.randn(*shape, generator=g, dtype=F64)
    x0_pred = x0 + 0.3 * torch.randn(*shape, generator=g, dtype=F64)
    t = torch.randint(2, T + 1, (shape[0],), generator=g)
    return x0, x0_pred, t


@SNR_LOSS.case("shape", "one loss per example: (B, 2) -> (B,)")
def _snr_shape(fn):
    s = cosine_schedule(30)
    x0, x0_pred, t = _snr_inputs((8, 2), 30, seed=71)
    expect_shape(fn(x0, x0_pred, t, s.alpha_bars), (8,), "the loss of (8, 2) points")


@SNR_LOSS.case("value", "equals the KL of the denoising term with sigma_t^2 = beta-tilde_t "
                        "(computed with the library)", points=2)
def _snr_value(fn):
    s = cosine_schedule(60)
    x0, x0_pred, t = _snr_inputs((16, 2), 60, seed=72)
    out = fn(x0, x0_pred, t, s.alpha_bars)
    ref = _kl_with_posterior_variance(x0, x0_pred, t, s.alpha_bars, seed=73)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        sq = _flat(x0 - x0_pred).pow(2).sum(1).double()
        later = 0.5 * (s.snr(t) - s.snr(torch.clamp(t + 1, max=60))) * sq
        if torch.allclose(out.double(), later, rtol=1e-4):
            raise Mismatch("off by one step: the weight of step t is SNR(t - 1) - SNR(t)")
        if torch.allclose(out.double(), 2 * ref.double(), rtol=1e-4):
            raise Mismatch("the weight has a factor 1/2: 1/2 (SNR(t - 1) - SNR(t))")
    expect_close(out, ref, "the SNR-weighted loss", rtol=1e-4)


@SNR_LOSS.case("batching", "images (B, 1, 28, 28) with per-image t: sums over all pixels")
def _snr_images(fn):
    s = cosine_schedule(50)
    x0, x0_pred, t = _snr_inputs((4, 1, 28, 28), 50, seed=74)
    expect_close(fn(x0, x0_pred, t, s.alpha_bars),
                 _kl_with_posterior_variance(x0, x0_pred, t, s.alpha_bars, seed=75),
                 "the loss for a batch of images", rtol=1e-4)


@SNR_LOSS.case("value", "linear schedule, T = 1000, t down to 2, where SNR(1) is about 10^4")
def _snr_large(fn):
    s = linear_schedule(1000)
    x0, x0_pred, _ = _snr_inputs((6, 2), 1000, seed=76)
    t = torch.tensor([2, 3, 10, 100, 500, 1000])
    expect_close(fn(x0, x0_pred, t, s.alpha_bars), reference_snr_weighted_loss(x0, x0_pred, t, s.alpha_bars),
                 "the loss near t = 2", rtol=1e-4)
