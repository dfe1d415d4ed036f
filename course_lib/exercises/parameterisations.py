"""Exercises of notebook 06 (three parameterisations): converting an x0- or score-prediction to
eps, Tweedie's formula for E[x_0 | x_t], and the simple-weighted training loss of one batch.

The learner's functions take plain tensors in the course notation (`alpha_bars` indexed t = 0..T
with alpha_bars[0] = 1; t a (B,) integer tensor, one step per example); the `reference_*`
functions below give the library's answer in the same signature, by way of
`course_lib.diffusion` and the Gaussian-mixture oracle.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.mixture import GaussianMixture
from ..diffusion import (broadcast, diffusion_loss_per_example, eps_from_score, eps_from_x0,
                         q_sample, x0_from_score)
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded
from ..nets import MLP
from ..schedules import cosine_schedule, linear_schedule, schedule_from_alpha_bars

F64 = torch.float64
KINDS = ("eps", "x0", "score")


# ----------------------------------------------------------- the library's answers
def reference_to_eps(pred: torch.Tensor, kind: str, xt: torch.Tensor, t: torch.Tensor,
                     alpha_bars: torch.Tensor) -> torch.Tensor:
    """eps from a prediction of eps, x_0 or the score  (Luo 2022, Eq. 115 and 151)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "eps":
        return pred
    schedule = schedule_from_alpha_bars(alpha_bars)
    convert = eps_from_x0 if kind == "x0" else eps_from_score
    return convert(xt, t, pred, schedule)


def reference_tweedie_x0(xt: torch.Tensor, score: torch.Tensor, t: torch.Tensor,
                         alpha_bars: torch.Tensor) -> torch.Tensor:
    """E[x_0 | x_t] = (x_t + (1 - alpha-bar_t) score) / sqrt(alpha-bar_t)  (Luo Eq. 131-133)."""
    return x0_from_score(xt, t, score, schedule_from_alpha_bars(alpha_bars))


def reference_diffusion_loss_batch(model, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                                   alpha_bars: torch.Tensor, kind: str) -> torch.Tensor:
    """The simple-weighted loss of one batch with given t and eps, a scalar (Ho et al. 2020, Eq. 14)."""
    schedule = schedule_from_alpha_bars(alpha_bars)
    return diffusion_loss_per_example(model, x0, schedule, kind, "simple", t=t, eps=eps).mean()


def _coef(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return broadcast(values[t], x)                                 # (B,) -> (B, 1, ..., 1)


# ------------------------------------------------------------------------ to_eps
TO_EPS = exercise("06.to_eps", "Convert an x0- or score-prediction into a noise prediction")


def _conv_inputs(shape, T: int, seed: int, t_low: int = 1):
    g = seeded(seed)                                                 # float64: exact references
    xt = torch.randn(*shape, generator=g, dtype=F64)
    pred = torch.randn(*shape, generator=g, dtype=F64)
    t = torch.randint(t_low, T + 1, (shape[0],), generator=g)
    return pred, xt, t


def _x0_mistakes(out, pred, xt, t, alpha_bars) -> None:
    """Name the usual slips of eps = (x_t - sqrt(alpha-bar_t) x_0) / sqrt(1 - alpha-bar_t)."""
    if not isinstance(out, torch.Tensor) or out.shape != xt.shape:
        return
    ab = _coef(alpha_bars, t, xt)
    a = _coef(alpha_bars[1:] / alpha_bars[:-1], t - 1, xt)          # alpha_t = alpha-bar_t / alpha-bar_{t-1}
    wrong = {"uses alpha_t (one step) where alpha-bar_t (all steps up to t) belongs":
             (xt - a.sqrt() * pred) / (1 - a).sqrt(),
             "forgets a square root: x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps":
             (xt - ab * pred) / (1 - ab),
             "forgets the square root of 1 - alpha-bar_t in the denominator":
             (xt - ab.sqrt() * pred) / (1 - ab)}
    for message, value in wrong.items():
        if torch.allclose(out.double(), value, rtol=1e-6, atol=1e-8):
            raise Mismatch(f"your conversion from x0 {message}")


@TO_EPS.case("shape", "an x0-prediction for (B, 2) points gives eps of shape (B, 2)")
def _to_eps_shape(fn):
    s = cosine_schedule(50)
    pred, xt, t = _conv_inputs((7, 2), 50, seed=601)
    expect_shape(fn(pred, "x0", xt, t, s.alpha_bars), (7, 2), "eps from an x0-prediction")


@TO_EPS.case("value", "x0 -> eps, each point with its own t: eps = (x_t - sqrt(a) x0) / sqrt(1 - a)",
             points=2)
def _to_eps_x0(fn):
    s = linear_schedule(200, 1e-3, 0.04)
    pred, xt, t = _conv_inputs((16, 2), 200, seed=602, t_low=2)
    out = fn(pred, "x0", xt, t, s.alpha_bars)
    _x0_mistakes(out, pred, xt, t, s.alpha_bars)
    expect_close(out, reference_to_eps(pred, "x0", xt, t, s.alpha_bars), "eps from x0_pred")


@TO_EPS.case("value", "score -> eps: eps = -sqrt(1 - alpha-bar_t) score (the sign too)")
def _to_eps_score(fn):
    s = cosine_schedule(100)
    pred, xt, t = _conv_inputs((12, 2), 100, seed=603)
    out = fn(pred, "score", xt, t, s.alpha_bars)
    if isinstance(out, torch.Tensor) and out.shape == xt.shape:
        ab = _coef(s.alpha_bars, t, xt)
        if torch.allclose(out.double(), (1 - ab).sqrt() * pred, rtol=1e-6):
            raise Mismatch("the sign is wrong: the score points towards the data, the noise away "
                           "from it, so eps = -sqrt(1 - alpha-bar_t) score")
        if torch.allclose(out.double(), -(1 - ab) * pred, rtol=1e-6):
            raise Mismatch("use sqrt(1 - alpha-bar_t), the noise's standard deviation, not its variance")
        if torch.allclose(out.double(), -pred / (1 - ab).sqrt(), rtol=1e-6):
            raise Mismatch("that is eps -> score; going back, multiply by -sqrt(1 - alpha-bar_t)")
    expect_close(out, reference_to_eps(pred, "score", xt, t, s.alpha_bars), "eps from score_pred")


@TO_EPS.case("batching", "images (B, 1, 28, 28) with per-image t, for both kinds")
def _to_eps_images(fn):
    s = linear_schedule(1000)
    pred, xt, t = _conv_inputs((4, 1, 28, 28), 1000, seed=604)
    for kind in ("x0", "score"):
        expect_close(fn(pred, kind, xt, t, s.alpha_bars),
                     reference_to_eps(pred, kind, xt, t, s.alpha_bars), f"eps from a {kind}-prediction of images")


@TO_EPS.case("properties", "kind 'eps' returns pred; x0 and score of one eps convert back to it")
def _to_eps_round_trip(fn):
    s = cosine_schedule(80)
    eps, xt, t = _conv_inputs((10, 2), 80, seed=605)
    expect_close(fn(eps, "eps", xt, t, s.alpha_bars), eps, "to_eps(pred, 'eps', ...)")
    ab = _coef(s.alpha_bars, t, xt)
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()                   # the x_0 that eps implies
    score = -eps / (1 - ab).sqrt()
    expect_close(fn(x0, "x0", xt, t, s.alpha_bars), eps, "eps recovered from its x_0", atol=1e-7)
    expect_close(fn(score, "score", xt, t, s.alpha_bars), eps, "eps recovered from its score", atol=1e-7)


# ------------------------------------------------------------------------ Tweedie
TWEEDIE = exercise("06.tweedie", "Tweedie's formula: E[x_0 | x_t] from the score")


def _hidden_mixture() -> GaussianMixture:
    """Three 2-D Gaussians with full covariances and unequal weights (not shown in the notebook)."""
    means = torch.tensor([[-1.5, 0.5], [1.0, 1.5], [0.5, -1.5]], dtype=F64)
    covs = torch.tensor([[[0.20, 0.05], [0.05, 0.10]], [[0.05, -0.02], [-0.02, 0.30]],
                         [[0.40, 0.15], [0.15, 0.15]]], dtype=F64)
    return GaussianMixture(torch.tensor([0.5, 0.2, 0.3], dtype=F64), means, covs)


def _mixture_inputs(n: int, schedule, seed: int):
    """x_t ~ q_t of the hidden mixture, per-sample t, with the exact score and E[x_0 | x_t]."""
    g = seeded(seed)
    mix = _hidden_mixture()
    t = torch.randint(1, schedule.T + 1, (n,), generator=g)
    xt = q_sample(mix.sample(n, generator=g), t, schedule, generator=g)
    ab = schedule.alpha_bars[t]
    return xt, mix.marginal_score(xt, ab), t, mix.posterior_mean_x0(xt, ab)


@TWEEDIE.case("shape", "(B, 2) points and scores give (B, 2)")
def _tw_shape(fn):
    s = cosine_schedule(40)
    xt, score, t, _ = _mixture_inputs(6, s, seed=611)
    expect_shape(fn(xt, score, t, s.alpha_bars), (6, 2), "E[x_0 | x_t] for (6, 2) points")


@TWEEDIE.case("value", "a Gaussian mixture: equals E[x_0 | x_t] by Gaussian conditioning, "
                       "per-sample t", points=2)
def _tw_mixture(fn):
    s = linear_schedule(500, 1e-4, 0.03)
    xt, score, t, ref = _mixture_inputs(40, s, seed=612)
    out = fn(xt, score, t, s.alpha_bars)
    if isinstance(out, torch.Tensor) and out.shape == xt.shape:
        ab = _coef(s.alpha_bars, t, xt)
        if torch.allclose(out.double(), (xt + (1 - ab).sqrt() * score) / ab.sqrt(), rtol=1e-6):
            raise Mismatch("the score is multiplied by the noise *variance* 1 - alpha-bar_t, "
                           "not by its standard deviation")
        if torch.allclose(out.double(), xt + (1 - ab) * score, rtol=1e-6):
            raise Mismatch("that is E[sqrt(alpha-bar_t) x_0 | x_t], the mean of the signal part of "
                           "x_t; divide by sqrt(alpha-bar_t) to get E[x_0 | x_t]")
    expect_close(out, ref, "E[x_0 | x_t] for the mixture", atol=1e-8, rtol=1e-6)


@TWEEDIE.case("batching", "images (B, 1, 28, 28) of Gaussian pixels x_0 ~ N(m, v): Bayes' rule per pixel")
def _tw_images(fn):
    s = cosine_schedule(100)
    g = seeded(613)
    m, v = 0.3, 0.25
    t = torch.randint(1, 101, (5,), generator=g)
    x0 = m + v**0.5 * torch.randn(5, 1, 28, 28, generator=g, dtype=F64)
    xt = q_sample(x0, t, s, generator=g)
    ab = _coef(s.alpha_bars, t, xt)
    var_t = ab * v + 1 - ab                                         # q_t = N(sqrt(a) m, a v + 1 - a)
    score = -(xt - ab.sqrt() * m) / var_t
    posterior_mean = m + ab.sqrt() * v / var_t * (xt - ab.sqrt() * m)   # linear-Gaussian Bayes
    expect_close(fn(xt, score, t, s.alpha_bars), posterior_mean, "E[x_0 | x_t] for Gaussian pixels",
                 atol=1e-8, rtol=1e-6)


@TWEEDIE.case("indexing", "t = 1 and t = T of a 1000-step schedule (alpha-bar_t from 0.9999 to 4e-5)")
def _tw_ends(fn):
    s = linear_schedule(1000)
    mix = _hidden_mixture()
    for step in (1, 1000):
        g = seeded(614 + step)
        t = torch.full((8,), step)
        xt = q_sample(mix.sample(8, generator=g), t, s, generator=g)
        ab = s.alpha_bars[t]
        out = fn(xt, mix.marginal_score(xt, ab), t, s.alpha_bars)
        expect_close(out, mix.posterior_mean_x0(xt, ab), f"E[x_0 | x_t] at t = {step}",
                     atol=1e-7, rtol=1e-5)


# -------------------------------------------------------------------------- loss
LOSS = exercise("06.loss", "The simple-weighted training loss of one batch, in any parameterisation")


class _PixelNet(nn.Module):
    """A tiny time-conditioned net for any shape (B, ...): tanh(w x + b) + c sin(t / 97)."""

    def __init__(self, seed: int):
        super().__init__()
        g = seeded(seed)
        self.w, self.b, self.c = (nn.Parameter(torch.randn((), generator=g, dtype=F64)) for _ in range(3))

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t).to(x.dtype)
        return torch.tanh(self.w * x + self.b) + self.c * broadcast(torch.sin(t / 97), x)


def _mlp(seed: int) -> MLP:
    """A small MLP whose weights are fixed by `seed` (the global random state is left alone)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MLP(dim=2, hidden=32, depth=2)          # float32, so t may be given as float or long


def _loss_inputs(shape, T: int, seed: int, dtype=torch.float32):
    g = seeded(seed)
    x0 = torch.randn(*shape, generator=g, dtype=dtype)
    t = torch.randint(1, T + 1, (shape[0],), generator=g)
    eps = torch.randn(*shape, generator=g, dtype=dtype)
    return x0, t, eps


def _scalar(out, what: str) -> torch.Tensor:
    expect_tensor(out, what)
    if out.ndim != 0:
        raise Mismatch(f"{what} should be one number (a 0-d tensor, the batch mean), got shape "
                       f"{tuple(out.shape)}")
    return out


@LOSS.case("shape", "one number for the batch (a 0-d tensor)")
def _loss_shape(fn):
    s = cosine_schedule(50)
    x0, t, eps = _loss_inputs((8, 2), 50, seed=621)
    _scalar(fn(_mlp(0), x0, t, eps, s.alpha_bars, "eps"), "the loss")


@LOSS.case("value", "eps- and x0-prediction with a small MLP: mean over the batch of the "
                    "per-example mean squared error", points=2)
def _loss_eps_x0(fn):
    s = linear_schedule(300, 1e-4, 0.03)
    x0, t, eps = _loss_inputs((32, 2), 300, seed=622)
    for kind in ("eps", "x0"):
        model = _mlp(1)
        out = _scalar(fn(model, x0, t, eps, s.alpha_bars, kind), f"the {kind} loss")
        ref = reference_diffusion_loss_batch(model, x0, t, eps, s.alpha_bars, kind)
        if kind == "eps" and torch.allclose(out.double(), 2 * ref.double(), rtol=1e-5):
            raise Mismatch("the loss is twice the reference: average over the D entries of each "
                           "example (mean, not sum), then over the batch")
        expect_close(out, ref, f"the {kind} loss")


@LOSS.case("value", "score-prediction: the target is the conditional score -eps / sqrt(1 - alpha-bar_t)")
def _loss_score(fn):
    s = cosine_schedule(200)
    x0, t, eps = _loss_inputs((32, 2), 200, seed=623)
    model = _mlp(2)
    out = _scalar(fn(model, x0, t, eps, s.alpha_bars, "score"), "the score loss")
    ref = reference_diffusion_loss_batch(model, x0, t, eps, s.alpha_bars, "score")
    with torch.no_grad():
        xt = q_sample(x0, t, s, eps=eps)
        pred = model(xt, t.float())
        ab = _coef(s.alpha_bars, t, x0)
        for target, message in ((eps / (1 - ab).sqrt(), "the target's sign is wrong: -eps / sqrt(1 - alpha-bar_t)"),
                                (-eps / (1 - ab), "divide eps by sqrt(1 - alpha-bar_t), not by 1 - alpha-bar_t"),
                                (-eps * (1 - ab).sqrt(), "the target is -eps / sqrt(1 - alpha-bar_t); "
                                                         "you multiplied")):
            if torch.allclose(out.double(), (target - pred).pow(2).mean().double(), rtol=1e-5):
                raise Mismatch(message)
    expect_close(out, ref, "the score loss")


@LOSS.case("batching", "images (B, 1, 28, 28) with per-image t, all three kinds")
def _loss_images(fn):
    s = linear_schedule(1000)
    x0, t, eps = _loss_inputs((4, 1, 28, 28), 1000, seed=624, dtype=F64)
    for kind in KINDS:
        model = _PixelNet(625)
        expect_close(_scalar(fn(model, x0, t, eps, s.alpha_bars, kind), f"the {kind} loss of images"),
                     reference_diffusion_loss_batch(model, x0, t, eps, s.alpha_bars, kind),
                     f"the {kind} loss of images")


@LOSS.case("gradient", "the loss back-propagates to the model's weights (same gradient as the library)")
def _loss_gradient(fn):
    s = cosine_schedule(100)
    x0, t, eps = _loss_inputs((16, 2), 100, seed=626)
    model, ref_model = _mlp(3), _mlp(3)
    out = _scalar(fn(model, x0, t, eps, s.alpha_bars, "eps"), "the loss")
    if not out.requires_grad:
        raise Mismatch("the loss does not depend on the model's weights (no gradient): do not detach "
                       "the prediction or wrap the computation in torch.no_grad()")
    out.backward()
    reference_diffusion_loss_batch(ref_model, x0, t, eps, s.alpha_bars, "eps").backward()
    for (name, p), p_ref in zip(model.named_parameters(), ref_model.parameters()):
        if p.grad is None:
            raise Mismatch(f"no gradient reached the weights {name}")
        expect_close(p.grad, p_ref.grad, f"the gradient of the loss with respect to {name}")
