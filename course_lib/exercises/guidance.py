"""Exercises of notebook 09 (conditioning and guidance): the classifier-guided noise prediction,
the classifier-free combination, and condition dropout.

The learner's functions take plain tensors in the course notation (`alpha_bars` indexed t = 0..T
with alpha_bars[0] = 1; t a (B,) integer tensor, one step per example); the `reference_*`
functions below give the library's answer in the same signature, by way of
`course_lib.guidance` and `course_lib.diffusion`. Guidance scales follow Luo (2022), Eq. 166 and
169: gamma = 0 ignores the label, gamma = 1 samples p(x | y), gamma > 1 sharpens.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.mixture import GaussianMixture, make_mixture
from ..diffusion import broadcast, eps_fn_from_score_fn
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded
from ..guidance import cfg_combine, cfg_eps_fn, classifier_guided_eps_fn, drop_labels
from ..nets import NULL_LABEL
from ..schedules import cosine_schedule, linear_schedule, schedule_from_alpha_bars

F64 = torch.float64


# ----------------------------------------------------------- the library's answers
def reference_guided_eps(eps: torch.Tensor, grad_log_p_y: torch.Tensor, t: torch.Tensor,
                         alpha_bars: torch.Tensor, gamma: float) -> torch.Tensor:
    """eps - gamma sqrt(1 - alpha-bar_t) grad log p(y | x_t)  (Luo 2022, Eq. 166 in eps units)."""
    return eps - gamma * broadcast((1 - alpha_bars[t]).sqrt(), eps) * grad_log_p_y


def reference_cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma eps(x_t, t, y) + (1 - gamma) eps(x_t, t)  (Luo Eq. 169-170 in eps units)."""
    return cfg_combine(eps_cond, eps_uncond, gamma)


def reference_drop_labels(y: torch.Tensor, p_uncond: float, u: torch.Tensor) -> torch.Tensor:
    """y with the null label -1 wherever the uniform u < p_uncond (Ho & Salimans 2022, Alg. 1)."""
    return torch.where(u < p_uncond, torch.full_like(y, NULL_LABEL), y)


# ----------------------------------------------------------- stand-in classifiers
class _LinearClassifier:
    """logits = W flatten(x) + b, ignoring t: a classifier whose gradient autograd gives exactly."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor):
        self.W, self.b = W, b

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1) @ self.W.T.to(x.dtype) + self.b.to(x.dtype)


class _OracleClassifier:
    """p(k | x_t) of a noised Gaussian mixture: the exact noise-aware classifier."""

    def __init__(self, mixture: GaussianMixture, alpha_bars: torch.Tensor):
        self.mixture, self.alpha_bars = mixture, alpha_bars

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mixture.component_log_prob(x, self.alpha_bars[t.long()].to(x.dtype))


def _classifier_grad(classifier, xt: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """grad_x log softmax(classifier(x, t))[y], by autograd."""
    x = xt.detach().clone().requires_grad_(True)
    log_p = F.log_softmax(classifier(x, t.to(x.dtype)), dim=-1)
    return torch.autograd.grad(log_p.gather(1, y[:, None]).sum(), x)[0]


# ------------------------------------------------------------ guided eps
GUIDED = exercise("09.guided_eps", "Classifier guidance: the guided noise prediction")


def _guided_inputs(shape, alpha_bars: torch.Tensor, seed: int, dtype=F64):
    g = seeded(seed)
    T = alpha_bars.shape[0] - 1
    eps = torch.randn(*shape, generator=g, dtype=dtype)
    grad = torch.randn(*shape, generator=g, dtype=dtype)
    t = torch.randint(1, T + 1, (shape[0],), generator=g)
    return eps, grad, t


@GUIDED.case("shape", "2-D points (B, 2): the guided eps has the shape of eps")
def _guided_shape(fn):
    s = cosine_schedule(50)
    eps, grad, t = _guided_inputs((7, 2), s.alpha_bars, seed=91)
    expect_shape(fn(eps, grad, t, s.alpha_bars, 2.0), (7, 2), "the guided eps of (7, 2) points")


@GUIDED.case("value", "matches guidance.classifier_guided_eps_fn with a stand-in linear classifier, "
                      "each point at its own t", points=2)
def _guided_value(fn):
    s = linear_schedule(200)
    g = seeded(92)
    W, b = torch.randn(4, 2, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    clf = _LinearClassifier(W, b)
    xt, eps = torch.randn(12, 2, generator=g, dtype=F64), torch.randn(12, 2, generator=g, dtype=F64)
    t = torch.randint(2, 201, (12,), generator=g)
    y, gamma = 3, 2.5
    grad = _classifier_grad(clf, xt, t, torch.full((12,), y))
    out = expect_tensor(fn(eps, grad, t, s.alpha_bars, gamma), "the guided eps")
    ref = classifier_guided_eps_fn(lambda x, t: eps, clf, y, gamma, s)(xt, t)
    if out.shape == ref.shape:
        ab = broadcast(s.alpha_bars[t], eps)
        alpha_t = broadcast(s.alphas[t], eps)
        mistakes = [(eps + gamma * (1 - ab).sqrt() * grad,
                     "the sign is flipped: eps = -sqrt(1 - alpha-bar_t) x score, so adding "
                     "gamma grad log p(y | x_t) to the score SUBTRACTS from eps"),
                    (eps - gamma * (1 - ab) * grad,
                     "the factor is sqrt(1 - alpha-bar_t), the noise standard deviation, not "
                     "its variance 1 - alpha-bar_t"),
                    (eps - gamma * grad,
                     "the classifier gradient is a score; it needs the factor sqrt(1 - alpha-bar_t) "
                     "to be in eps units"),
                    (eps - gamma * (1 - alpha_t).sqrt() * grad,
                     "use alpha-bar_t (the total noise up to step t), not alpha_t of one step")]
        for wrong, message in mistakes:
            if torch.allclose(out.double(), wrong, atol=1e-8, rtol=1e-6):
                raise Mismatch(message)
    expect_close(out, ref, "the guided eps")


@GUIDED.case("batching", "images (B, 1, 28, 28), float32, with per-image t: the same code path")
def _guided_images(fn):
    s = linear_schedule(1000)
    eps, grad, t = _guided_inputs((5, 1, 28, 28), s.alpha_bars, seed=93, dtype=torch.float32)
    out = fn(eps, grad, t, s.alpha_bars, 3.0)
    expect_close(out, reference_guided_eps(eps, grad, t, s.alpha_bars, 3.0),
                 "the guided eps for a batch of images")


@GUIDED.case("properties", "gamma = 0 gives eps back; gamma = 1 with the exact class posterior of a "
                           "noised mixture gives the exact class-conditional eps (Bayes, Luo Eq. 165)")
def _guided_oracle(fn):
    s = cosine_schedule(100)
    mix = make_mixture("three_unequal").to(dtype=F64)
    g = seeded(94)
    xt = 2 * torch.randn(9, 2, generator=g, dtype=F64)
    t = torch.randint(1, 101, (9,), generator=g)
    eps = eps_fn_from_score_fn(lambda x, t: mix.marginal_score(x, s.alpha_bars[t]), s)(xt, t)
    expect_close(fn(eps, torch.ones_like(eps), t, s.alpha_bars, 0.0), eps, "the guided eps with gamma = 0")
    y = 1
    grad = _classifier_grad(_OracleClassifier(mix, s.alpha_bars), xt, t, torch.full((9,), y))
    component = GaussianMixture(torch.ones(1, dtype=F64), mix.means[y:y + 1], mix.covs[y:y + 1])
    exact = eps_fn_from_score_fn(lambda x, t: component.marginal_score(x, s.alpha_bars[t]), s)(xt, t)
    expect_close(fn(eps, grad, t, s.alpha_bars, 1.0), exact,
                 "the guided eps with gamma = 1 and the exact classifier (vs the exact conditional eps)")


# ------------------------------------------------------------ classifier-free combination
CFG = exercise("09.cfg", "Classifier-free guidance: combine the conditional and unconditional eps")


def _cfg_inputs(shape, seed: int, dtype=F64):
    g = seeded(seed)
    return torch.randn(*shape, generator=g, dtype=dtype), torch.randn(*shape, generator=g, dtype=dtype)


@CFG.case("shape", "2-D points (B, 2): the result has the shape of eps")
def _cfg_shape(fn):
    eps_c, eps_u = _cfg_inputs((6, 2), seed=101)
    expect_shape(fn(eps_c, eps_u, 3.0), (6, 2), "the guided eps of (6, 2) points")


@CFG.case("value", "gamma eps_c + (1 - gamma) eps_u for several gamma (Luo Eq. 169-170)", points=2)
def _cfg_value(fn):
    eps_c, eps_u = _cfg_inputs((10, 2), seed=102)
    for gamma in (0.3, 2.0, 4.0):
        out = expect_tensor(fn(eps_c, eps_u, gamma), "the guided eps")
        ref = reference_cfg_combine(eps_c, eps_u, gamma)
        if out.shape == ref.shape:
            if torch.allclose(out.double(), cfg_combine(eps_c, eps_u, gamma + 1), atol=1e-8):
                raise Mismatch(f"with gamma = {gamma} this is Ho & Salimans' formula with w = gamma: "
                               "eps_c + w (eps_c - eps_u). The course's gamma (Luo Eq. 169) is "
                               "w + 1, so the result should be eps_u + gamma (eps_c - eps_u)")
            if torch.allclose(out.double(), cfg_combine(eps_u, eps_c, gamma), atol=1e-8):
                raise Mismatch("the two predictions are swapped: gamma multiplies the "
                               "CONDITIONAL eps, (1 - gamma) the unconditional one")
        expect_close(out, ref, f"the guided eps with gamma = {gamma}")


@CFG.case("batching", "images (B, 1, 28, 28), float32")
def _cfg_images(fn):
    eps_c, eps_u = _cfg_inputs((4, 1, 28, 28), seed=103, dtype=torch.float32)
    expect_close(fn(eps_c, eps_u, 2.5), reference_cfg_combine(eps_c, eps_u, 2.5),
                 "the guided eps for a batch of images")


@CFG.case("properties", "gamma = 0 gives the unconditional eps, gamma = 1 the conditional one; "
                        "agrees with guidance.cfg_eps_fn on a labelled network")
def _cfg_properties(fn):
    eps_c, eps_u = _cfg_inputs((8, 2), seed=104)
    expect_close(fn(eps_c, eps_u, 0.0), eps_u, "the guided eps with gamma = 0")
    expect_close(fn(eps_c, eps_u, 1.0), eps_c, "the guided eps with gamma = 1")

    def net(x, t, y):                                  # eps = x * (label + 2); null label -1 -> x
        return x * (y.to(x.dtype) + 2)[:, None] + t[:, None] / 100

    s = linear_schedule(100)
    g = seeded(105)
    xt, t = torch.randn(8, 2, generator=g, dtype=F64), torch.randint(1, 101, (8,), generator=g)
    tf = t.to(F64)
    cond, uncond = net(xt, tf, torch.full((8,), 3)), net(xt, tf, torch.full((8,), NULL_LABEL))
    expect_close(fn(cond, uncond, 1.7), cfg_eps_fn(net, s, 3, 1.7)(xt, t),
                 "the guided eps against guidance.cfg_eps_fn")


# ------------------------------------------------------------ condition dropout
DROP = exercise("09.drop_labels", "Condition dropout: replace labels by the null label -1")


def _drop_inputs(n: int, seed: int, classes: int = 10):
    g = seeded(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return y, g


@DROP.case("shape", "labels (B,) long in, labels (B,) long out")
def _drop_shape(fn):
    y, g = _drop_inputs(9, seed=111)
    out = expect_shape(fn(y, 0.3, torch.rand(9, generator=g)), (9,), "the labels after dropout")
    if out.dtype != torch.long:
        raise Mismatch(f"the labels should stay integer (torch.long), got {out.dtype}")


@DROP.case("value", "-1 exactly where u < p_uncond, y elsewhere; equals guidance.drop_labels "
                    "fed the same uniforms", points=2)
def _drop_value(fn):
    y, _ = _drop_inputs(400, seed=112)
    p = 0.25
    u = torch.rand(y.shape, generator=seeded(113))            # the uniforms drop_labels draws
    y_in = y.clone()
    out = expect_tensor(fn(y, p, u), "the labels after dropout")
    if not torch.equal(y, y_in):
        raise Mismatch("your function changed y in place; return a new tensor")
    ref = drop_labels(y, p, generator=seeded(113))
    if out.shape == ref.shape:
        if torch.equal(out, torch.where(u >= p, torch.full_like(y, NULL_LABEL), y)):
            raise Mismatch("you dropped where u >= p_uncond: that drops a fraction 1 - p_uncond "
                           "of the labels instead of p_uncond")
        if torch.equal(out, torch.where(u < p, torch.zeros_like(y), y)):
            raise Mismatch("the null label is -1 (nets.NULL_LABEL), not 0: 0 is a real class")
    expect_close(out, ref, "the labels after dropout")
    if not torch.equal(out.long(), ref):
        raise Mismatch("the labels differ from guidance.drop_labels with the same uniforms")


@DROP.case("properties", "p_uncond = 0 keeps every label, p_uncond = 1 drops every label")
def _drop_extremes(fn):
    y, g = _drop_inputs(50, seed=114)
    u = torch.rand(50, generator=g)
    expect_close(fn(y, 0.0, u), y, "the labels with p_uncond = 0")
    expect_close(fn(y, 1.0, u), torch.full_like(y, NULL_LABEL), "the labels with p_uncond = 1")


@DROP.case("statistics", "on 20,000 labels the dropped fraction is p_uncond within 4 standard errors")
def _drop_rate(fn):
    y, g = _drop_inputs(20_000, seed=115)
    p = 0.1
    out = expect_tensor(fn(y, p, torch.rand(20_000, generator=g)), "the labels after dropout")
    rate = float((out == NULL_LABEL).double().mean())
    se = (p * (1 - p) / 20_000) ** 0.5
    if abs(rate - p) > 4 * se:
        raise Mismatch(f"{rate:.3f} of the labels were dropped; expected about {p}")
