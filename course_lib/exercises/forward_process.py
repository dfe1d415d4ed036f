"""Exercises of notebook 04 (the forward process): alpha-bar from betas, q_sample, prior KL.

The learner's functions take plain tensors in the course notation (arrays indexed t = 0..T, with
betas[0] = 0 and alpha_bars[0] = 1); the `reference_*` functions below give the library's answer
in the same signature, by way of `course_lib.schedules` and `course_lib.diffusion`.
"""
from __future__ import annotations

import torch

from ..diffusion import q_sample
from ..schedules import (Schedule, cosine_schedule, linear_schedule, prior_kl,
                         schedule_from_alpha_bars, schedule_from_betas)
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded

F64 = torch.float64


# ----------------------------------------------------------- the library's answers
def reference_alpha_bars(betas: torch.Tensor) -> torch.Tensor:
    """alpha-bar_t = prod_{s <= t} (1 - beta_s), t = 0..T, from betas (T+1,) with betas[0] = 0."""
    return schedule_from_betas(betas[1:]).alpha_bars.to(betas.dtype)


def reference_q_sample(x0: torch.Tensor, t: torch.Tensor, alpha_bars: torch.Tensor,
                       eps: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps (Luo 2022, Eq. 69), per-sample t."""
    return q_sample(x0, t, schedule_from_alpha_bars(alpha_bars), eps=eps)


def reference_prior_kl(x0: torch.Tensor, alpha_bar_T: float) -> torch.Tensor:
    """KL(q(x_T | x_0) || N(0, I)) per example (B,), for alpha-bar_T a float in (0, 1)."""
    a = float(alpha_bar_T)
    return prior_kl(schedule_from_betas([1 - a]), x0)            # a one-step schedule with alpha-bar_1 = a


# ------------------------------------------------------------------ alpha-bar from betas
ALPHA_BARS = exercise("04.alpha_bars", "alpha-bar_t from the variance schedule beta_t")


@ALPHA_BARS.case("shape", "betas (T+1,) give alpha_bars (T+1,), with alpha_bars[0] = 1")
def _ab_shape(fn):
    betas = linear_schedule(23, 1e-3, 0.1).betas
    out = expect_shape(fn(betas), (24,), "alpha_bars for T = 23")
    if abs(float(out[0]) - 1.0) > 1e-12:
        raise Mismatch(f"alpha_bars[0] should be 1 (no noise at t = 0: the clean data), got "
                       f"{float(out[0]):.6g}")


@ALPHA_BARS.case("value", "a three-step schedule worked by hand: betas 0.1, 0.2, 0.5")
def _ab_by_hand(fn):
    betas = torch.tensor([0.0, 0.1, 0.2, 0.5], dtype=F64)
    expected = torch.tensor([1.0, 0.9, 0.72, 0.36], dtype=F64)
    out = expect_shape(fn(betas), (4,), "alpha_bars")
    if torch.allclose(out.double(), torch.tensor([0.9, 0.72, 0.36, 0.36], dtype=F64)) or \
            torch.allclose(out.double(), torch.tensor([1.0, 1.0, 0.9, 0.72], dtype=F64)):
        raise Mismatch("off by one step: alpha_bars[t] should include alpha_1 ... alpha_t, so "
                       "alpha_bars[1] = 1 - beta_1 = 0.9 and alpha_bars[3] = 0.36")
    expect_close(out, expected, "alpha_bars for betas [0, 0.1, 0.2, 0.5]", atol=1e-9, rtol=1e-9)


@ALPHA_BARS.case("value", "matches the library on a cosine schedule (T = 37)", points=2)
def _ab_cosine(fn):
    s = cosine_schedule(37)
    expect_close(fn(s.betas.clone()), s.alpha_bars, "alpha_bars of the cosine schedule",
                 atol=1e-12, rtol=1e-10)


@ALPHA_BARS.case("dtype", "float32 betas give float32 alpha_bars with the same values")
def _ab_float32(fn):
    s = linear_schedule(200)
    out = expect_tensor(fn(s.betas.float()), "alpha_bars")
    if out.dtype != torch.float32:
        raise Mismatch(f"float32 betas should give float32 alpha_bars, got {out.dtype}")
    expect_close(out, s.alpha_bars, "alpha_bars in float32", atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------ q_sample
Q_SAMPLE = exercise("04.q_sample", "Sample x_t ~ q(x_t | x_0) in one shot")


def _q_inputs(shape, T: int, seed: int):
    g = seeded(seed)
    x0 = torch.randn(*shape, generator=g)
    eps = torch.randn(*shape, generator=g)
    t = torch.randint(1, T + 1, (shape[0],), generator=g)
    return x0, t, eps


@Q_SAMPLE.case("shape", "2-D points (B, 2) give x_t of shape (B, 2)")
def _q_shape(fn):
    s = cosine_schedule(60)
    x0, t, eps = _q_inputs((9, 2), 60, seed=11)
    expect_shape(fn(x0, t, s.alpha_bars, eps), (9, 2), "x_t for (9, 2) points")


@Q_SAMPLE.case("value", "each point uses its own step t: matches the library on (B, 2)", points=2)
def _q_value(fn):
    s = linear_schedule(80, 1e-3, 0.1)
    x0, t, eps = _q_inputs((12, 2), 80, seed=12)
    out = fn(x0, t, s.alpha_bars, eps)
    if isinstance(out, torch.Tensor) and out.shape == x0.shape:
        a = s.alpha_bars[t].float()[:, None]
        if torch.allclose(out.double(), (a * x0 + (1 - a) * eps).double(), atol=1e-5):
            raise Mismatch("the coefficients are alpha-bar_t and 1 - alpha-bar_t; they should be "
                           "their square roots (they scale x_0 and eps, whose variances they are)")
    expect_close(out, reference_q_sample(x0, t, s.alpha_bars, eps), "x_t")


@Q_SAMPLE.case("batching", "images (B, 1, 28, 28) with per-image t: the same code path", points=2)
def _q_images(fn):
    s = cosine_schedule(50)
    x0, t, eps = _q_inputs((5, 1, 28, 28), 50, seed=13)
    out = fn(x0, t, s.alpha_bars, eps)
    expect_close(out, reference_q_sample(x0, t, s.alpha_bars, eps), "x_t for a batch of images")


@Q_SAMPLE.case("dtype", "float32 data with the float64 alpha_bars of a Schedule stay float32")
def _q_dtype(fn):
    s = linear_schedule(30, 1e-3, 0.2)
    x0, t, eps = _q_inputs((4, 2), 30, seed=14)
    out = expect_tensor(fn(x0, t, s.alpha_bars, eps), "x_t")
    if out.dtype != x0.dtype:
        raise Mismatch(f"x_t should have x0's dtype {x0.dtype}, got {out.dtype}: cast the "
                       f"coefficients with .to(x0.dtype) before multiplying")


@Q_SAMPLE.case("indexing", "t indexes alpha_bars directly: x_1 uses alpha-bar_1, x_T uses alpha-bar_T")
def _q_indexing(fn):
    s = linear_schedule(1000)
    x0, _, eps = _q_inputs((6, 2), 1000, seed=15)
    ones = torch.ones(6, dtype=torch.long)
    x1 = expect_tensor(fn(x0, ones, s.alpha_bars, eps), "x_1")
    if x1.shape == x0.shape and torch.allclose(x1.double(), x0.double(), atol=1e-7):
        raise Mismatch("x_1 came out equal to x_0: off by one step (alpha_bars[t - 1]?). "
                       "alpha_bars[0] = 1 is the clean data and alpha_bars[t] belongs to step t")
    expect_close(x1, reference_q_sample(x0, ones, s.alpha_bars, eps), "x_1")
    expect_close(fn(x0, 1000 * ones, s.alpha_bars, eps),
                 reference_q_sample(x0, 1000 * ones, s.alpha_bars, eps), "x_T")


# ---------------------------------------------------------------------- prior matching
PRIOR_KL = exercise("04.prior_kl", "The prior-matching term KL(q(x_T | x_0) || N(0, I))")


@PRIOR_KL.case("shape", "one KL per example: (B, 2) -> (B,) and (B, 1, 28, 28) -> (B,)")
def _kl_shape(fn):
    g = seeded(21)
    expect_shape(fn(torch.randn(7, 2, generator=g), 0.1), (7,), "prior KL of (7, 2) points")
    expect_shape(fn(torch.rand(3, 1, 28, 28, generator=g) * 2 - 1, 0.01), (3,),
                 "prior KL of (3, 1, 28, 28) images")


@PRIOR_KL.case("value", "matches the library for 2-D points at several alpha-bar_T", points=2)
def _kl_value(fn):
    x0 = torch.randn(10, 2, generator=seeded(22), dtype=F64)
    for a in (0.5, 0.05, 1e-4):
        out = fn(x0, a)
        ref = reference_prior_kl(x0, a)
        if isinstance(out, torch.Tensor) and out.shape == ref.shape:
            mean_only = 0.5 * a * x0.pow(2).sum(1)
            if torch.allclose(out.double(), mean_only, rtol=1e-6, atol=1e-12):
                raise Mismatch("only the mean term 1/2 alpha-bar |x_0|^2 is there; the variances "
                               "also differ (1 - alpha-bar_T vs 1), which adds "
                               "1/2 D (-alpha-bar_T - log(1 - alpha-bar_T)) per example")
        expect_close(out, ref, f"prior KL at alpha-bar_T = {a}", atol=1e-7, rtol=1e-5)


@PRIOR_KL.case("batching", "images: the KL sums (not averages) over all 784 pixels", points=2)
def _kl_images(fn):
    x0 = torch.rand(4, 1, 28, 28, generator=seeded(23)) * 2 - 1
    expect_close(fn(x0, 0.02), reference_prior_kl(x0, 0.02), "prior KL of images",
                 atol=1e-5, rtol=1e-4)


@PRIOR_KL.case("properties", "KL >= 0, it grows with alpha-bar_T and vanishes as alpha-bar_T -> 0")
def _kl_properties(fn):
    x0 = torch.randn(6, 3, generator=seeded(24), dtype=F64)
    kls = [fn(x0, a) for a in (0.9, 0.3, 1e-3, 1e-9)]
    for a, kl in zip((0.9, 0.3, 1e-3, 1e-9), kls):
        expect_shape(kl, (6,), f"prior KL at alpha-bar_T = {a}")
        if (kl < -1e-9).any():
            raise Mismatch(f"a KL divergence is never negative, got {float(kl.min()):.3g} at "
                           f"alpha-bar_T = {a}")
    if not all(bool((k1 > k2).all()) for k1, k2 in zip(kls, kls[1:])):
        raise Mismatch("the KL should decrease as alpha-bar_T decreases (less of x_0 survives)")
    if float(kls[-1].max()) > 1e-6:
        raise Mismatch(f"at alpha-bar_T = 1e-9 the KL should be ~0, got {float(kls[-1].max()):.3g}")
