"""Exercises of notebook 10 (continuous time): one Euler-Maruyama step, a small monotone log-SNR
schedule with fixed endpoints, and the weighted (continuous-ELBO) diffusion loss.

The learner's functions take plain tensors (x of shape (B, 2) or (B, 1, 28, 28); per-example
coefficients of shape (B,)); the `reference_*` functions below give the answer in the same
signature, by way of `course_lib.sde` and `course_lib.continuous` where the library has it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..continuous import (alpha_sigma, cosine_log_snr, log_snr_and_slope, weight,
                          weighted_loss_per_example)
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded
from ..sde import euler_maruyama_step

F64 = torch.float64
SHARPNESS = 10.0          # the soft steps sigmoid(SHARPNESS (t - b_k)) of `log_snr_from_params`


def _per_example(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))            # (B,) -> (B, 1, ..., 1)


# ----------------------------------------------------------- the answers
def reference_em_step(x: torch.Tensor, drift: torch.Tensor, g: torch.Tensor, dt: float,
                      z: torch.Tensor) -> torch.Tensor:
    """x + drift dt + g sqrt(|dt|) z, g (B,) one diffusion coefficient per example; dt < 0 runs
    backwards in time (Kloeden & Platen 1992, Sec. 10.2; `sde.euler_maruyama_step`)."""
    return euler_maruyama_step(x, drift, g, dt, z)


def _phi_tilde(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """t + sum_k softplus(w_k) sigmoid(SHARPNESS (t - b_k)): increasing in t for any w, b."""
    steps = torch.sigmoid(SHARPNESS * (t[:, None] - b))              # (B, K) soft steps at b_k
    return t + steps @ F.softplus(w)                                 # (B,)


def reference_log_snr_from_params(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                                  lambda_min: float, lambda_max: float) -> torch.Tensor:
    """lambda(t) = lambda_max - (lambda_max - lambda_min) phi(t), phi the increasing phi~ rescaled
    to run from 0 at t = 0 to 1 at t = 1 (a one-layer version of `continuous.MonotoneLogSNR`;
    Luo 2022, Eq. 111; Kingma et al. 2021, Appendix H)."""
    ends = _phi_tilde(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device), w, b)
    phi = (_phi_tilde(t, w, b) - ends[0]) / (ends[1] - ends[0])
    return lambda_max - (lambda_max - lambda_min) * phi


def reference_weighted_loss(eps: torch.Tensor, eps_pred: torch.Tensor, log_snr: torch.Tensor,
                            slope: torch.Tensor, weighting: str = "elbo",
                            bias: float = 0.0) -> torch.Tensor:
    """1/2 w(lambda) (-lambda'(t)) ||eps - eps_pred||^2 per example (B,) (Kingma et al. 2021,
    Eq. 17 for w = 1; Kingma & Gao 2023, Eq. 5); `continuous.weight` gives w."""
    err2 = (eps - eps_pred).reshape(len(eps), -1).pow(2).sum(1)
    return 0.5 * weight(weighting, log_snr, slope, bias) * (-slope) * err2


# ---------------------------------------------------------------------- 10.em_step
EM_STEP = exercise("10.em_step", "One Euler-Maruyama step of an SDE, forwards or backwards in time")


def _em_inputs(shape, seed: int):
    gen = seeded(seed)
    x, drift, z = (torch.randn(*shape, generator=gen, dtype=F64) for _ in range(3))
    g = torch.rand(shape[0], generator=gen, dtype=F64) * 3 + 0.2       # (B,) one g per example
    return x, drift, g, z


def _em_mistakes(out, x, drift, g, dt, z) -> None:
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        return
    gb = _per_example(g, x)
    close = lambda a: torch.allclose(out.double(), a, atol=1e-7, rtol=1e-6)  # noqa: E731
    if close(x + drift * dt + gb * abs(dt) * z):
        raise Mismatch("the noise scales with sqrt(|dt|), not with dt: Brownian increments have "
                       "variance |dt|")
    if close(x + drift * dt + gb**2 * math.sqrt(abs(dt)) * z):
        raise Mismatch("multiply the noise by g, not by g^2 (g^2 is the variance rate)")
    if dt < 0 and close(x - drift * dt + gb * math.sqrt(-dt) * z):
        raise Mismatch("with dt < 0 the drift term is drift * dt (it points the other way): "
                       "do not flip its sign yourself")
    if dt < 0 and close(x + drift * abs(dt) + gb * math.sqrt(-dt) * z):
        raise Mismatch("the drift term is drift * dt with the sign of dt, not drift * |dt|")


@EM_STEP.case("shape", "2-D points (B, 2) with g (B,): returns (B, 2)")
def _em_shape(fn):
    x, drift, g, z = _em_inputs((7, 2), seed=101)
    expect_shape(fn(x, drift, g, 0.01, z), (7, 2), "the new state of (7, 2) points")


@EM_STEP.case("value", "forward in time (dt > 0): x + f dt + g sqrt(dt) z", points=2)
def _em_forward(fn):
    x, drift, g, z = _em_inputs((16, 2), seed=102)
    out = fn(x, drift, g, 0.004, z)
    _em_mistakes(out, x, drift, g, 0.004, z)
    expect_close(out, reference_em_step(x, drift, g, 0.004, z), "the forward step")


@EM_STEP.case("reverse time", "backward in time (dt < 0), as in the reverse SDE: "
                              "the noise still scales with sqrt(|dt|)", points=2)
def _em_backward(fn):
    x, drift, g, z = _em_inputs((16, 2), seed=103)
    out = expect_tensor(fn(x, drift, g, -0.01, z), "the backward step")
    if torch.isnan(out).any():
        raise Mismatch("NaN for dt < 0: take the square root of |dt|, not of dt")
    _em_mistakes(out, x, drift, g, -0.01, z)
    expect_close(out, reference_em_step(x, drift, g, -0.01, z), "the backward step")


@EM_STEP.case("batching", "images (B, 1, 28, 28) with g (B,): g broadcasts over the pixels")
def _em_images(fn):
    x, drift, g, z = _em_inputs((3, 1, 28, 28), seed=104)
    expect_close(fn(x, drift, g, -0.002, z), reference_em_step(x, drift, g, -0.002, z),
                 "the step for a batch of images")


# ---------------------------------------------------------------------- 10.monotone_snr
MONOTONE = exercise("10.monotone_snr", "A monotone log-SNR schedule with fixed endpoints")


def _snr_params(K: int, seed: int, scale: float = 2.0):
    gen = seeded(seed)
    w = torch.randn(K, generator=gen, dtype=F64) * scale
    b = torch.rand(K, generator=gen, dtype=F64)
    return w, b


@MONOTONE.case("shape", "t (B,) -> lambda (B,)")
def _mono_shape(fn):
    w, b = _snr_params(5, seed=201)
    t = torch.rand(9, generator=seeded(202), dtype=F64)
    expect_shape(fn(t, w, b, -8.0, 6.0), (9,), "lambda of 9 times")


@MONOTONE.case("endpoints", "lambda(0) = lambda_max and lambda(1) = lambda_min for any parameters")
def _mono_ends(fn):
    for seed in (203, 204):
        w, b = _snr_params(6, seed=seed, scale=4.0)
        out = fn(torch.tensor([0.0, 1.0], dtype=F64), w, b, -12.0, 9.0)
        expect_shape(out, (2,), "lambda at t = 0 and t = 1")
        if torch.allclose(out.double(), torch.tensor([-12.0, 9.0], dtype=F64), atol=1e-6):
            raise Mismatch("the schedule runs the wrong way: lambda must DECREASE from lambda_max "
                           "at t = 0 (clean) to lambda_min at t = 1 (noise)")
        expect_close(out, torch.tensor([9.0, -12.0], dtype=F64), "lambda(0), lambda(1)",
                     atol=1e-6)


@MONOTONE.case("monotone", "strictly decreasing on a fine grid, for parameters of any sign",
               points=2)
def _mono_decreasing(fn):
    t = torch.linspace(0, 1, 401, dtype=F64)
    for seed in (205, 206, 207):
        w, b = _snr_params(8, seed=seed, scale=5.0)
        out = expect_shape(fn(t, w, b, -10.0, 10.0), (401,), "lambda on a grid of 401 times")
        if not bool((out.diff() < 0).all()):
            raise Mismatch("lambda increases somewhere in t: make every weight positive "
                           "(softplus(w)), so that each soft step adds to phi")


@MONOTONE.case("value", "matches the formula, with K = 3 soft steps")
def _mono_value(fn):
    w, b = _snr_params(3, seed=208)
    t = torch.rand(12, generator=seeded(209), dtype=F64)
    expect_close(fn(t, w, b, -6.0, 7.0), reference_log_snr_from_params(t, w, b, -6.0, 7.0),
                 "lambda(t)")


@MONOTONE.case("gradients", "differentiable in w and b (a schedule must be trainable)")
def _mono_grad(fn):
    w, b = _snr_params(4, seed=210)
    t = torch.rand(10, generator=seeded(211), dtype=F64)
    grads = []
    for f in (fn, reference_log_snr_from_params):
        wq, bq = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        out = expect_tensor(f(t, wq, bq, -5.0, 5.0), "lambda(t)")
        if not out.requires_grad:
            raise Mismatch("the output carries no gradient: compute with torch operations only "
                           "(no .detach(), .item() or numpy)")
        gw, gb = torch.autograd.grad(out.pow(2).sum(), (wq, bq), allow_unused=True)
        grads.append(torch.cat([torch.zeros_like(w) if gw is None else gw,
                                torch.zeros_like(b) if gb is None else gb]))
    expect_close(grads[0], grads[1], "the gradient of sum lambda^2 with respect to (w, b)")


# ---------------------------------------------------------------------- 10.likelihood_weighting
WEIGHTED = exercise("10.likelihood_weighting",
                    "The weighted diffusion loss: the continuous ELBO and its reweightings")


def _loss_inputs(shape, seed: int):
    gen = seeded(seed)
    eps = torch.randn(*shape, generator=gen, dtype=F64)
    eps_pred = eps + 0.5 * torch.randn(*shape, generator=gen, dtype=F64)
    log_snr = torch.rand(shape[0], generator=gen, dtype=F64) * 20 - 10    # (B,) in (-10, 10)
    slope = -(torch.rand(shape[0], generator=gen, dtype=F64) * 30 + 1)   # (B,) negative
    return eps, eps_pred, log_snr, slope


@WEIGHTED.case("shape", "one loss per example: (B, 2) -> (B,)")
def _w_shape(fn):
    eps, eps_pred, lam, slope = _loss_inputs((6, 2), seed=301)
    expect_shape(fn(eps, eps_pred, lam, slope, "elbo"), (6,), "the loss of (6, 2) points")


@WEIGHTED.case("value", "weighting 'elbo': equals continuous.weighted_loss_per_example, "
                        "1/2 (-lambda') ||eps - eps_pred||^2", points=2)
def _w_elbo(fn):
    gen = seeded(302)
    x0 = torch.randn(16, 2, generator=gen, dtype=F64)
    eps = torch.randn(16, 2, generator=gen, dtype=F64)
    t = torch.rand(16, generator=gen, dtype=F64)
    model = lambda xt, ts: torch.tanh(xt) * (1 + ts[:, None] / 1000)          # any eps predictor
    schedule = cosine_log_snr(-9.0, 8.0)
    lam, slope = log_snr_and_slope(schedule, t)
    a, s = alpha_sigma(lam)
    eps_pred = model(a[:, None] * x0 + s[:, None] * eps, t * 1000)
    out = fn(eps, eps_pred, lam, slope, "elbo")
    ref = weighted_loss_per_example(model, x0, schedule, "elbo", t=t, eps=eps)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        if torch.allclose(out.double(), -ref, rtol=1e-6):
            raise Mismatch("the loss is negative: lambda decreases, so the weight is -dlambda/dt > 0")
        if torch.allclose(out.double(), 2 * ref, rtol=1e-6):
            raise Mismatch("the continuous ELBO has a factor 1/2: 1/2 (-lambda') ||eps - eps_pred||^2")
    expect_close(out, ref, "the ELBO-weighted loss")


@WEIGHTED.case("weightings", "'simple' gives 1/2 ||eps - eps_pred||^2 and 'sigmoid' "
                             "w = sigmoid(bias - lambda) (Kingma & Gao 2023)")
def _w_other(fn):
    eps, eps_pred, lam, slope = _loss_inputs((12, 2), seed=303)
    expect_close(fn(eps, eps_pred, lam, slope, "simple"),
                 0.5 * (eps - eps_pred).pow(2).sum(1), "the 'simple' loss")
    expect_close(fn(eps, eps_pred, lam, slope, "sigmoid", bias=2.0),
                 reference_weighted_loss(eps, eps_pred, lam, slope, "sigmoid", 2.0),
                 "the 'sigmoid' loss with bias 2")


@WEIGHTED.case("batching", "images (B, 1, 28, 28): the squared error sums over all pixels")
def _w_images(fn):
    eps, eps_pred, lam, slope = _loss_inputs((4, 1, 28, 28), seed=304)
    expect_close(fn(eps, eps_pred, lam, slope, "elbo"),
                 reference_weighted_loss(eps, eps_pred, lam, slope, "elbo"),
                 "the loss of a batch of images")
