"""Exercises of notebook 07 (sampling): one ancestral DDPM step, the DDIM noise scale, one DDIM step.

The learner's functions take plain tensors in the course notation (`alpha_bars` (T+1,) float64
indexed t = 0..T with alpha_bars[0] = 1; t and t_prev (B,) integer tensors, one step per example;
x of shape (B, 2) or (B, 1, 28, 28)); the `reference_*` functions below give the library's answer
in the same signature, by way of `course_lib.diffusion`.
"""
from __future__ import annotations

import torch

from ..diffusion import ddim_sigma, ddim_step, ddpm_step
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, seeded
from ..schedules import cosine_schedule, linear_schedule, schedule_from_alpha_bars

F64 = torch.float64


def _per_example(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return coef.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))       # (B,) -> (B, 1, ..., 1)


# ----------------------------------------------------------- the library's answers
def reference_ddpm_step(eps_pred: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                        alpha_bars: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps_pred) + sigma_t z, with
    sigma_t^2 = beta-tilde_t and no noise at t = 1 (Ho et al. 2020, Algorithm 2)."""
    return ddpm_step(eps_pred, xt, t, schedule_from_alpha_bars(alpha_bars), "posterior", noise=z)


def reference_ddim_sigma(t: torch.Tensor, t_prev: torch.Tensor, alpha_bars: torch.Tensor,
                         eta: float) -> torch.Tensor:
    """eta sqrt((1 - alpha-bar_prev) / (1 - alpha-bar_t)) sqrt(1 - alpha-bar_t / alpha-bar_prev)
    (Song et al. 2021, Eq. 16), shape of t."""
    return ddim_sigma(schedule_from_alpha_bars(alpha_bars), t, t_prev, eta)


def reference_ddim_step(eps_pred: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                        t_prev: torch.Tensor, alpha_bars: torch.Tensor, eta: float,
                        z: torch.Tensor) -> torch.Tensor:
    """One DDIM step from x_t to x_{t_prev} with noise z (Song et al. 2021, Eq. 12)."""
    return ddim_step(eps_pred, xt, t, t_prev, schedule_from_alpha_bars(alpha_bars), eta, noise=z)


# ---------------------------------------------------------------------- inputs
def _step_inputs(shape, T: int, seed: int, t_low: int = 1):
    g = seeded(seed)                                                 # float64: exact references
    eps_pred = torch.randn(*shape, generator=g, dtype=F64)
    xt = torch.randn(*shape, generator=g, dtype=F64)
    z = torch.randn(*shape, generator=g, dtype=F64)
    t = torch.randint(t_low, T + 1, (shape[0],), generator=g)
    return eps_pred, xt, t, z


def _skip_steps(B: int, T: int, seed: int, prev_low: int = 0):
    """(B,) pairs t_prev < t with arbitrary gaps, as a DDIM subsequence gives."""
    g = seeded(seed)
    t = torch.randint(prev_low + 1, T + 1, (B,), generator=g)
    t_prev = (torch.rand(B, generator=g, dtype=F64) * (t - prev_low)).long() + prev_low   # prev_low..t-1
    return t, t_prev


# ---------------------------------------------------------------------- 07.ddpm_step
DDPM_STEP = exercise("07.ddpm_step", "One ancestral DDPM step x_t -> x_{t-1} (sigma_t^2 = beta-tilde_t)")


def _ddpm_mistakes(out, eps_pred, xt, t, alpha_bars, z) -> None:
    """Name the usual slips when the answer has the right shape but the wrong value."""
    if not isinstance(out, torch.Tensor) or out.shape != xt.shape:
        return
    ab_t, ab_prev = _per_example(alpha_bars[t], xt), _per_example(alpha_bars[t - 1], xt)
    alpha_t, beta_t = ab_t / ab_prev, 1 - ab_t / ab_prev
    keep = _per_example((t > 1).to(F64), xt)
    post = (1 - ab_prev) / (1 - ab_t) * beta_t
    mean = (xt - beta_t / (1 - ab_t).sqrt() * eps_pred) / alpha_t.sqrt()
    close = lambda a: torch.allclose(out.double(), a.double(), atol=1e-6, rtol=1e-5)  # noqa: E731
    if close((xt - beta_t / (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt() + keep * post.sqrt() * z):
        raise Mismatch("the mean divides by sqrt(alpha-bar_t); it should be sqrt(alpha_t) with "
                       "alpha_t = alpha-bar_t / alpha-bar_{t-1} (one step, not all t)")
    if close(mean + keep * beta_t.sqrt() * z):
        raise Mismatch("the noise has variance beta_t; this exercise asks for the posterior "
                       "variance beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t")
    if close(mean + keep * post * z):
        raise Mismatch("the noise is scaled by the variance beta-tilde_t; scale it by the standard "
                       "deviation sqrt(beta-tilde_t)")


@DDPM_STEP.case("shape", "2-D points (B, 2) -> x_{t-1} of shape (B, 2)")
def _ddpm_shape(fn):
    s = cosine_schedule(40)
    eps_pred, xt, t, z = _step_inputs((9, 2), 40, seed=701)
    expect_shape(fn(eps_pred, xt, t, s.alpha_bars, z), (9, 2), "x_{t-1} for (9, 2) points")


@DDPM_STEP.case("value", "each point with its own t in 2..T: matches Ho et al. Algorithm 2", points=2)
def _ddpm_value(fn):
    s = linear_schedule(200, 1e-4, 0.05)
    eps_pred, xt, t, z = _step_inputs((16, 2), 200, seed=702, t_low=2)
    out = fn(eps_pred, xt, t, s.alpha_bars, z)
    _ddpm_mistakes(out, eps_pred, xt, t, s.alpha_bars, z)
    expect_close(out, reference_ddpm_step(eps_pred, xt, t, s.alpha_bars, z), "x_{t-1}")


@DDPM_STEP.case("indexing", "t = 1 returns the mean, without noise; t = T uses the last coefficients")
def _ddpm_t1(fn):
    s = linear_schedule(1000)
    eps_pred, xt, _, z = _step_inputs((6, 2), 1000, seed=703)
    t = torch.tensor([1, 1, 2, 500, 999, 1000])
    out = fn(eps_pred, xt, t, s.alpha_bars, z)
    ref = reference_ddpm_step(eps_pred, xt, t, s.alpha_bars, z)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape and not torch.allclose(
            out[:2].double(), ref[:2], atol=1e-6, rtol=1e-5):
        raise Mismatch("at t = 1 the step should return the mean mu_theta(x_1, 1) with no noise "
                       "(Algorithm 2: lambda = 0 at t = 1)")
    _ddpm_mistakes(out, eps_pred, xt, t, s.alpha_bars, z)
    expect_close(out, ref, "x_{t-1} at t = 1, 2, 500, 999 and T")


@DDPM_STEP.case("batching", "images (B, 1, 28, 28) with per-image t, float32 inputs: the same code path")
def _ddpm_images(fn):
    s = cosine_schedule(50)
    eps_pred, xt, t, z = (a.float() if a.is_floating_point() else a
                          for a in _step_inputs((5, 1, 28, 28), 50, seed=704))
    ref = reference_ddpm_step(eps_pred.double(), xt.double(), t, s.alpha_bars, z.double())
    expect_close(fn(eps_pred, xt, t, s.alpha_bars, z), ref, "x_{t-1} for a batch of images", atol=1e-4)


# ---------------------------------------------------------------------- 07.ddim_sigma
DDIM_SIGMA = exercise("07.ddim_sigma", "The DDIM noise scale sigma_t(eta) of a step t -> t_prev")


@DDIM_SIGMA.case("shape", "one sigma per example: t, t_prev (B,) -> (B,)")
def _sigma_shape(fn):
    s = cosine_schedule(30)
    t, t_prev = _skip_steps(7, 30, seed=711)
    expect_shape(fn(t, t_prev, s.alpha_bars, 0.5), (7,), "sigma for 7 steps")


@DDIM_SIGMA.case("value", "skipped steps (t_prev < t - 1), eta = 0.7: matches Song et al. Eq. 16", points=2)
def _sigma_value(fn):
    s = linear_schedule(1000)
    t, t_prev = _skip_steps(20, 1000, seed=712, prev_low=1)
    out = fn(t, t_prev, s.alpha_bars, 0.7)
    ref = reference_ddim_sigma(t, t_prev, s.alpha_bars, 0.7)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        ab_t, ab_prev = s.alpha_bars[t], s.alpha_bars[t_prev]
        no_factor = 0.7 * ((1 - ab_prev) / (1 - ab_t)).sqrt()
        close = lambda a: torch.allclose(out.double(), a, rtol=1e-5)  # noqa: E731
        if close(no_factor):
            raise Mismatch("the factor sqrt(1 - alpha-bar_t / alpha-bar_prev) is missing")
        if close(ref**2) or close(ref**2 / 0.7):
            raise Mismatch("this is (close to) sigma^2; return the standard deviation sigma_t")
        if close(0.7 * ((1 - ab_prev) / (1 - ab_t) * (1 - s.alphas[t])).sqrt()):
            raise Mismatch("that is beta-tilde of the single step t -> t - 1; with skipped steps "
                           "use 1 - alpha-bar_t / alpha-bar_prev in place of beta_t")
    expect_close(out, ref, "sigma_t(eta)")


@DDIM_SIGMA.case("properties", "eta = 1 on consecutive steps gives sqrt(beta-tilde_t); eta = 0 gives 0")
def _sigma_ddpm(fn):
    s = cosine_schedule(100)
    t = torch.arange(2, 101)
    beta_tilde = (1 - s.alpha_bars[t - 1]) / (1 - s.alpha_bars[t]) * s.betas[t]
    expect_close(fn(t, t - 1, s.alpha_bars, 1.0), beta_tilde.sqrt(), "sigma_t(1) on the full sequence")
    expect_close(fn(t, t - 1, s.alpha_bars, 0.0), torch.zeros(99, dtype=F64), "sigma_t(0)")


@DDIM_SIGMA.case("indexing", "t_prev = 0 (the last step to x_0, alpha-bar_0 = 1): sigma = 0")
def _sigma_last(fn):
    s = linear_schedule(1000)
    t = torch.tensor([1, 20, 100, 1000])
    expect_close(fn(t, torch.zeros(4, dtype=torch.long), s.alpha_bars, 1.0),
                 reference_ddim_sigma(t, torch.zeros(4, dtype=torch.long), s.alpha_bars, 1.0),
                 "sigma of the last step")


# ---------------------------------------------------------------------- 07.ddim_step
DDIM_STEP = exercise("07.ddim_step", "One DDIM step x_t -> x_{t_prev}: predicted x_0, direction, noise")


def _ddim_mistakes(out, eps_pred, xt, t, t_prev, alpha_bars, eta, z) -> None:
    if not isinstance(out, torch.Tensor) or out.shape != xt.shape:
        return
    ab_t, ab_prev = _per_example(alpha_bars[t], xt), _per_example(alpha_bars[t_prev], xt)
    sigma = _per_example(reference_ddim_sigma(t, t_prev, alpha_bars, eta), xt)
    x0_pred = (xt - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
    close = lambda a: torch.allclose(out.double(), a.double(), atol=1e-6, rtol=1e-5)  # noqa: E731
    if eta > 0 and close(ab_prev.sqrt() * x0_pred + (1 - ab_prev).sqrt() * eps_pred + sigma * z):
        raise Mismatch("the direction to x_t should have coefficient sqrt(1 - alpha-bar_prev - "
                       "sigma_t^2): the noise takes its share of the variance")
    if eta > 0 and close(ab_prev.sqrt() * x0_pred + (1 - ab_prev - sigma**2).sqrt() * eps_pred):
        raise Mismatch("with eta > 0 the step adds the noise sigma_t z")
    if close(ab_prev.sqrt() * x0_pred):
        raise Mismatch("the 'direction pointing to x_t', sqrt(1 - alpha-bar_prev - sigma_t^2) "
                       "eps_pred, is missing")


@DDIM_STEP.case("shape", "2-D points (B, 2) -> x_{t_prev} of shape (B, 2)")
def _ddim_shape(fn):
    s = cosine_schedule(40)
    eps_pred, xt, _, z = _step_inputs((9, 2), 40, seed=721)
    t, t_prev = _skip_steps(9, 40, seed=722)
    expect_shape(fn(eps_pred, xt, t, t_prev, s.alpha_bars, 0.0, z), (9, 2), "x_{t_prev} for (9, 2) points")


@DDIM_STEP.case("value", "eta = 0, skipped steps: the deterministic step (Song et al. Eq. 12)")
def _ddim_det(fn):
    s = linear_schedule(1000)
    eps_pred, xt, _, z = _step_inputs((16, 2), 1000, seed=723)
    t, t_prev = _skip_steps(16, 1000, seed=724, prev_low=1)
    out = fn(eps_pred, xt, t, t_prev, s.alpha_bars, 0.0, z)
    _ddim_mistakes(out, eps_pred, xt, t, t_prev, s.alpha_bars, 0.0, z)
    expect_close(out, reference_ddim_step(eps_pred, xt, t, t_prev, s.alpha_bars, 0.0, z),
                 "x_{t_prev} with eta = 0")


@DDIM_STEP.case("value", "eta = 0.5 and eta = 1, skipped steps, with the given noise z", points=2)
def _ddim_noisy(fn):
    s = cosine_schedule(200)
    eps_pred, xt, _, z = _step_inputs((16, 2), 200, seed=725)
    t, t_prev = _skip_steps(16, 200, seed=726, prev_low=1)
    for eta in (0.5, 1.0):
        out = fn(eps_pred, xt, t, t_prev, s.alpha_bars, eta, z)
        _ddim_mistakes(out, eps_pred, xt, t, t_prev, s.alpha_bars, eta, z)
        expect_close(out, reference_ddim_step(eps_pred, xt, t, t_prev, s.alpha_bars, eta, z),
                     f"x_{{t_prev}} with eta = {eta}")


@DDIM_STEP.case("indexing", "t_prev = 0 (the last step): returns the predicted x_0")
def _ddim_last(fn):
    s = linear_schedule(1000)
    eps_pred, xt, _, z = _step_inputs((5, 2), 1000, seed=727)
    t = torch.tensor([1, 10, 20, 500, 1000])
    zero = torch.zeros(5, dtype=torch.long)
    x0_pred = (xt - (1 - s.alpha_bars[t])[:, None].sqrt() * eps_pred) / s.alpha_bars[t][:, None].sqrt()
    expect_close(fn(eps_pred, xt, t, zero, s.alpha_bars, 1.0, z), x0_pred, "x_0 after the last step")


@DDIM_STEP.case("batching", "images (B, 1, 28, 28), per-image t and t_prev, eta = 1, float32")
def _ddim_images(fn):
    s = cosine_schedule(50)
    eps_pred, xt, _, z = (a.float() if a.is_floating_point() else a
                          for a in _step_inputs((5, 1, 28, 28), 50, seed=728))
    t, t_prev = _skip_steps(5, 50, seed=729)
    ref = reference_ddim_step(eps_pred.double(), xt.double(), t, t_prev, s.alpha_bars, 1.0, z.double())
    expect_close(fn(eps_pred, xt, t, t_prev, s.alpha_bars, 1.0, z), ref,
                 "x_{t_prev} for a batch of images", atol=1e-4)
