"""Exercises of notebook 02 (variational autoencoders): KL to N(0, I), the negative ELBO, K latents.

The `reference_*` functions give the library's answer with the learner's signature, by way of
`course_lib.gaussians` and `course_lib.vae`.
"""
from __future__ import annotations

import math

import torch
from torch.distributions import Normal, kl_divergence

from ..gaussians import gaussian_kl, reparameterize
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded
from ..vae import log_likelihood

F64 = torch.float64


def _encoder_output(B: int, D: int, seed: int, dtype=torch.float32):
    """A made-up encoder output: means (B, D) and log-variances (B, D) in a plausible range."""
    g = seeded(seed)
    return torch.randn(B, D, generator=g, dtype=dtype), torch.randn(B, D, generator=g, dtype=dtype) - 1.0


# ----------------------------------------------------------- the library's answers
def reference_kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per row: (..., D) -> (...) (lecture chapter, Eq. 1.2)."""
    return gaussian_kl(mu, logvar)


def reference_neg_elbo(x: torch.Tensor, params: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                       likelihood: str = "bernoulli", sigma: float = 1.0) -> torch.Tensor:
    """-log p(x | z) + KL(q(z | x) || N(0, I)) per example (B,) (Luo 2022, Eq. 19, negated)."""
    return -log_likelihood(x, params, likelihood, sigma) + gaussian_kl(mu, logvar)


def reference_sample_latents(mu: torch.Tensor, logvar: torch.Tensor, K: int,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """K draws z ~ q(z | x_b) = N(mu_b, diag exp(logvar_b)) per row b: (B, D) -> (B, K, D)."""
    B, D = mu.shape
    eps = torch.randn(B, K, D, generator=generator, dtype=mu.dtype).to(mu.device)
    return reparameterize(mu[:, None, :], logvar[:, None, :], eps=eps)


# ------------------------------------------------------------------- KL to N(0, I)
KL = exercise("02.kl_standard_normal", "The prior-matching term KL(q(z | x) || N(0, I))")


@KL.case("shape", "one KL per example: (B, D) -> (B,)")
def _kl_shape(fn):
    expect_shape(fn(*_encoder_output(6, 5, seed=1)), (6,), "KL for a (6, 5) encoder output")


@KL.case("value", "matches torch.distributions.kl_divergence(Normal(mu, sigma), Normal(0, 1)) summed over D",
         points=2)
def _kl_value(fn):
    mu, logvar = _encoder_output(9, 7, seed=2, dtype=F64)
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    out = fn(mu, logvar)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        per_dim = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0))
        if torch.allclose(out.double(), per_dim.mean(-1), rtol=1e-6, atol=1e-9):
            raise Mismatch("you averaged over the latent dimensions; the KL of a diagonal Gaussian "
                           "is the SUM of the per-dimension KLs")
        no_minus_one = 0.5 * (logvar.exp() + mu.pow(2) - logvar).sum(-1)
        if torch.allclose(out.double(), no_minus_one, rtol=1e-6, atol=1e-9):
            raise Mismatch("the '- 1' per dimension is missing: KL = 1/2 sum(sigma^2 + mu^2 - 1 - log sigma^2)")
        var_as_exp2 = 0.5 * ((2 * logvar).exp() + mu.pow(2) - 1 - 2 * logvar).sum(-1)
        if torch.allclose(out.double(), var_as_exp2, rtol=1e-6, atol=1e-9):
            raise Mismatch("logvar is log sigma^2, so sigma^2 = exp(logvar), not exp(2 logvar)")
    expect_close(out, ref, "KL(q || N(0, I))", atol=1e-8, rtol=1e-7)


@KL.case("batching", "any leading batch shape: (4, 3, 2) -> (4, 3)")
def _kl_batching(fn):
    g = seeded(3)
    mu, logvar = torch.randn(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)
    expect_close(fn(mu, logvar), reference_kl_standard_normal(mu, logvar), "KL on a (4, 3, 2) batch")


@KL.case("properties", "KL = 0 exactly when q is the prior, and KL > 0 otherwise")
def _kl_properties(fn):
    zero = torch.zeros(5, 3)
    expect_close(fn(zero, zero), torch.zeros(5), "KL(N(0, I) || N(0, I))", atol=1e-7)
    mu, logvar = _encoder_output(200, 3, seed=4)
    out = expect_shape(fn(mu, logvar), (200,), "KL")
    if (out <= 0).any():
        raise Mismatch(f"KL came out <= 0 ({float(out.min()):.3g}) for a q that is not the prior")


# ------------------------------------------------------------------ negative ELBO
NEG_ELBO = exercise("02.neg_elbo", "The negative ELBO per example, Bernoulli or Gaussian decoder")


def _elbo_inputs(x_shape, D: int, seed: int, binary: bool = True, dtype=torch.float32):
    g = seeded(seed)
    x = torch.rand(*x_shape, generator=g, dtype=dtype)
    if binary:
        x = (x > 0.6).to(dtype)
    params = 2 * torch.randn(*x_shape, generator=g, dtype=dtype)
    mu, logvar = _encoder_output(x_shape[0], D, seed + 100, dtype)
    return x, params, mu, logvar


@NEG_ELBO.case("shape", "one value per example: images (B, 1, 28, 28) -> (B,), not the batch mean")
def _ne_shape(fn):
    x, params, mu, logvar = _elbo_inputs((5, 1, 28, 28), 8, seed=11)
    expect_shape(fn(x, params, mu, logvar), (5,), "neg_elbo for 5 images")


@NEG_ELBO.case("value", "Bernoulli decoder: BCE-with-logits summed over pixels, plus the KL", points=2)
def _ne_bernoulli(fn):
    x, params, mu, logvar = _elbo_inputs((6, 1, 28, 28), 4, seed=12, dtype=F64)
    ref = reference_neg_elbo(x, params, mu, logvar)
    out = fn(x, params, mu, logvar)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        bce = -log_likelihood(x, params, "bernoulli")
        kl = gaussian_kl(mu, logvar)
        if torch.allclose(out.double(), bce / 784 + kl, rtol=1e-6):
            raise Mismatch("you averaged the cross-entropy over the 784 pixels; log p(x | z) is a SUM "
                           "over pixels (the pixels are independent given z)")
        if torch.allclose(out.double(), bce, rtol=1e-6):
            raise Mismatch("the KL term is missing: -ELBO = reconstruction + KL(q(z | x) || p(z))")
        if torch.allclose(out.double(), bce - kl, rtol=1e-6):
            raise Mismatch("the KL has the wrong sign: -ELBO = -log p(x | z) + KL (Luo Eq. 19, negated)")
        probs = torch.sigmoid(params)
        if torch.allclose(out.double(), -log_likelihood(x, probs, "bernoulli") + kl, rtol=1e-6):
            raise Mismatch("params are logits: use binary_cross_entropy_with_logits(params, x) "
                           "(or apply sigmoid before binary_cross_entropy), not BCE-with-logits of sigmoid(params)")
    expect_close(out, ref, "-ELBO with a Bernoulli decoder", atol=1e-6, rtol=1e-6)


@NEG_ELBO.case("value", "Gaussian decoder N(mu(z), sigma^2 I), normalising constant included", points=2)
def _ne_gaussian(fn):
    x, params, mu, logvar = _elbo_inputs((7, 1, 28, 28), 5, seed=13, binary=False, dtype=F64)
    params = x + 0.2 * params                      # decoder means near the data
    for sigma in (0.1, 0.7):
        ref = reference_neg_elbo(x, params, mu, logvar, "gaussian", sigma)
        out = fn(x, params, mu, logvar, likelihood="gaussian", sigma=sigma)
        if isinstance(out, torch.Tensor) and out.shape == ref.shape:
            const = 784 * (0.5 * math.log(2 * math.pi) + math.log(sigma))
            if torch.allclose(out.double(), ref - const, rtol=1e-6):
                raise Mismatch("the normalising constant d log(sqrt(2 pi) sigma) is missing (chapter "
                               "Eq. 1.3): it does not change the gradients but it is part of -log p(x | z)")
            sq = 0.5 * (x - params).pow(2).flatten(1).sum(1)
            if torch.allclose(out.double(), ref - sq / sigma**2 + sq / sigma, rtol=1e-6):
                raise Mismatch("divide the squared error by sigma^2, not sigma")
        expect_close(out, ref, f"-ELBO with a Gaussian decoder, sigma = {sigma}", atol=1e-6, rtol=1e-6)


@NEG_ELBO.case("batching", "2-D points (B, 2) use the same code as images (B, 1, 28, 28)")
def _ne_points(fn):
    x, params, mu, logvar = _elbo_inputs((9, 2), 2, seed=14, binary=False)
    expect_close(fn(x, params, mu, logvar, likelihood="gaussian", sigma=0.5),
                 reference_neg_elbo(x, params, mu, logvar, "gaussian", 0.5), "-ELBO for (9, 2) points")


@NEG_ELBO.case("stability", "large logits (|logit| = 40) give finite, exact values")
def _ne_stable(fn):
    x, _, mu, logvar = _elbo_inputs((3, 1, 28, 28), 3, seed=15)
    params = 40.0 * (2 * x - 1)                      # confident and right ...
    params[:, :, :3] *= -1                           # ... except for three rows of pixels
    out = expect_tensor(fn(x, params, mu, logvar), "-ELBO")
    if not torch.isfinite(out).all():
        raise Mismatch("got inf or nan for large logits: log(sigmoid(l)) underflows; use "
                       "F.binary_cross_entropy_with_logits, which is computed stably")
    expect_close(out, reference_neg_elbo(x, params, mu, logvar), "-ELBO for large logits", rtol=1e-5)


# ---------------------------------------------------------- K latents per example
SAMPLE = exercise("02.reparameterize", "K reparameterised latents per example: (B, D) -> (B, K, D)")


@SAMPLE.case("shape", "mu, logvar (B, D) and K give z of shape (B, K, D)")
def _s_shape(fn):
    mu, logvar = _encoder_output(3, 4, seed=21)
    expect_shape(fn(mu, logvar, 5, seeded(0)), (3, 5, 4), "z for B = 3, K = 5, D = 4")
    expect_shape(fn(mu[:1, :1], logvar[:1, :1], 1, seeded(0)), (1, 1, 1), "z for B = K = D = 1")


@SAMPLE.case("value", "z = mu + exp(logvar / 2) * eps: the same noise moves with mu and logvar", points=2)
def _s_value(fn):
    mu1, lv1 = _encoder_output(4, 3, seed=22, dtype=F64)
    mu2, lv2 = _encoder_output(4, 3, seed=23, dtype=F64)
    z1 = expect_shape(fn(mu1, lv1, 6, seeded(5)), (4, 6, 3), "z")
    z2 = expect_shape(fn(mu2, lv2, 6, seeded(5)), (4, 6, 3), "z")
    eps = (z1 - mu1[:, None]) / (0.5 * lv1[:, None]).exp()          # the noise the first call used
    if torch.allclose(z2 - mu2[:, None], (lv2[:, None].exp() / lv1[:, None].exp()) * (z1 - mu1[:, None])):
        raise Mismatch("the noise is scaled by exp(logvar), the variance; scale it by the standard "
                       "deviation sigma = exp(logvar / 2)")
    expect_close(z2, mu2[:, None] + (0.5 * lv2[:, None]).exp() * eps,
                 "z for new (mu, logvar) with the same generator seed")


@SAMPLE.case("distribution", "the K samples of each example are independent draws of N(mu_b, sigma_b^2)",
             points=2)
def _s_distribution(fn):
    mu = torch.tensor([[2.0, -1.0], [0.0, 0.5]])
    logvar = torch.tensor([[0.0, -2.0], [1.0, 0.0]])
    K = 40_000
    z = expect_shape(fn(mu, logvar, K, seeded(6)), (2, K, 2), "z")
    if torch.allclose(z[:, 0], z[:, 1]):
        raise Mismatch("the K samples of an example are identical: draw noise of shape (B, K, D), "
                       "not (B, D) broadcast over K")
    if torch.allclose(z[0] - mu[0], (z[1] - mu[1]) * (0.5 * (logvar[0] - logvar[1])).exp(), atol=1e-5):
        raise Mismatch("the examples share one noise draw: draw noise of shape (B, K, D), not (K, D)")
    se = (0.5 * logvar).exp() / K**0.5
    expect_close(z.mean(1), mu, "mean over the K samples", atol=float(5 * se.max()), rtol=0)
    expect_close(z.std(1), (0.5 * logvar).exp(), "standard deviation over the K samples",
                 atol=0.02, rtol=0)


@SAMPLE.case("gradient", "z is differentiable in mu and logvar (the point of the trick)")
def _s_gradient(fn):
    mu, logvar = _encoder_output(3, 2, seed=24)
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    z = expect_tensor(fn(mu, logvar, 4, seeded(7)), "z")
    if not z.requires_grad:
        raise Mismatch("z carries no gradient: build it from mu and logvar with torch operations")
    d_mu, d_lv = torch.autograd.grad(z.sum(), (mu, logvar), allow_unused=True)
    if d_mu is None or d_lv is None:
        raise Mismatch("z does not depend on both mu and logvar")
    expect_close(d_mu, torch.full_like(mu, 4.0), "d(sum of z)/d mu (K = 4 samples per example)")
    eps = (z.detach() - mu.detach()[:, None]) / (0.5 * logvar.detach()[:, None]).exp()
    expect_close(d_lv, (0.5 * (0.5 * logvar.detach()[:, None]).exp() * eps).sum(1), "d(sum of z)/d logvar")
