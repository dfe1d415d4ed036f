"""Exercises of notebook 03 (Hierarchical VAEs).

- "03.markov_log_joint": log p(x, z_1:T) of a Markovian HVAE (Luo 2022, Eq. 23) from the
  decoder's log-likelihood, the latents and the parameters of the transitions p(z_{t-1} | z_t);
- "03.hvae_neg_elbo": the two-level negative ELBO (Luo Eq. 29 with T = 2) split into
  reconstruction, bottom KL and top KL, from the networks of a `course_lib.vae.HVAE` and given
  noise, compared with `HVAE.neg_elbo`;
- "03.kl_top": the top level's KL per latent dimension, E_q(z1|x)[KL(q(z2_j | z1) || N(0, 1))]
  estimated with K given draws of z1, the measure of top-level collapse.

Every function is written with given noise (eps) so that the answer is deterministic; the
`reference_*` functions are the answers, built from the library.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..gaussians import gaussian_kl, reparameterize
from ..grading.core import Mismatch, exercise, expect_close, expect_shape, seeded
from ..vae import HVAE, MLPDecoder, MLPEncoder, log_normal_diag, mnist_hvae

LOG_2PI = math.log(2 * math.pi)


# ------------------------------------------------------------------ references
def reference_markov_log_joint(log_px: torch.Tensor, zs: Sequence[torch.Tensor],
                               p_means: Sequence[torch.Tensor],
                               p_logvars: Sequence[torch.Tensor]) -> torch.Tensor:
    """log p(x, z_1:T) = log p(z_T) + sum_{t=2}^T log p(z_{t-1} | z_t) + log p(x | z_1)  (Luo Eq. 23).

    log_px: (...,) the decoder's log p(x | z_1); zs = [z_1, ..., z_T], each (..., D_t);
    p_means[i], p_logvars[i] (i = 0..T-2): mean and log-variance of p(z_{i+1} | z_{i+2}), shaped
    like zs[i] (the transition that generates zs[i]); p(z_T) = N(0, I). Returns (...,).
    """
    z_top = zs[-1]
    log_p = log_px + log_normal_diag(z_top, torch.zeros_like(z_top), torch.zeros_like(z_top))
    for z, mu, logvar in zip(zs[:-1], p_means, p_logvars):
        log_p = log_p + log_normal_diag(z, mu, logvar)
    return log_p


def reference_hvae_neg_elbo(model: HVAE, x: torch.Tensor, eps1: torch.Tensor, eps2: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, reconstruction, kl_bottom, kl_top), each (B,), as `HVAE.neg_elbo` with noise eps1, eps2."""
    mu1, logvar1 = model.q_z1(x)
    z1 = reparameterize(mu1, logvar1, eps1)
    mu2, logvar2 = model.q_z2(z1)
    z2 = reparameterize(mu2, logvar2, eps2)
    mu1_p, logvar1_p = model.p_z1(z2)
    reconstruction = -model.log_px(x, model.p_x(z1))
    kl_bottom = log_normal_diag(z1, mu1, logvar1) - log_normal_diag(z1, mu1_p, logvar1_p)
    kl_top = gaussian_kl(mu2, logvar2)
    return reconstruction + kl_bottom + kl_top, reconstruction, kl_bottom, kl_top


def reference_kl_top(model: HVAE, x: torch.Tensor, eps1: torch.Tensor) -> torch.Tensor:
    """1/K sum_k KL(q(z2_j | z1_k) || N(0, 1)) per dimension j, z1_k = mu1 + sigma1 * eps1[k]: (B, z2_dim).

    eps1 is (K, B, z1_dim). Summed over j it is a K-sample estimate of E_q(z1|x)[kl_top].
    """
    mu1, logvar1 = model.q_z1(x)                                   # (B, z1_dim)
    z1 = reparameterize(mu1, logvar1, eps1)                        # (K, B, z1_dim)
    mu2, logvar2 = model.q_z2(z1.flatten(0, 1))                    # (K*B, z2_dim)
    per_dim = gaussian_kl(mu2[..., None], logvar2[..., None])      # (K*B, z2_dim)
    return per_dim.view(*z1.shape[:2], -1).mean(0)                 # (B, z2_dim)


# ------------------------------------------------------------------ test models
def _toy_hvae(seed: int, z1_dim: int = 5, z2_dim: int = 3) -> HVAE:
    """A small HVAE for (B, 2) points with a Gaussian likelihood, random weights."""
    with torch.random.fork_rng():                                 # leave the caller's RNG alone
        torch.manual_seed(seed)
        model = HVAE(MLPEncoder((2,), z1_dim, (16,)), MLPEncoder((z1_dim,), z2_dim, (8,)),
                     MLPEncoder((z2_dim,), z1_dim, (8,)), MLPDecoder(z1_dim, (2,), (16,)),
                     likelihood="gaussian", sigma=0.3)
    return model.eval()


def _mnist_hvae(seed: int) -> HVAE:
    """A narrow two-level MNIST HVAE (Bernoulli likelihood) with random weights."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return mnist_hvae(z1_dim=6, z2_dim=4, hidden=(32,), hidden_z=(16,)).eval()


def _digits(n: int, seed: int) -> torch.Tensor:
    """n random binary 28x28 'images' (B, 1, 28, 28): inputs the notebook does not show."""
    return torch.bernoulli(torch.full((n, 1, 28, 28), 0.2), generator=seeded(seed))


# ------------------------------------------------------------ Markov log joint
JOINT = exercise("03.markov_log_joint", "The log joint of a Markovian HVAE (Luo Eq. 23)")


def _chain(B: int, dims: Sequence[int], seed: int, lead: tuple[int, ...] = ()):
    g = seeded(seed)
    log_px = -10 * torch.rand(*lead, B, generator=g)
    zs = [torch.randn(*lead, B, d, generator=g) for d in dims]
    means = [torch.randn(*lead, B, d, generator=g) for d in dims[:-1]]
    logvars = [torch.randn(*lead, B, d, generator=g) for d in dims[:-1]]
    return log_px, zs, means, logvars


@JOINT.case("shape", "three levels with a (B, D_t) batch give one log joint per example, (B,)")
def _joint_shape(fn):
    expect_shape(fn(*_chain(6, (4, 3, 2), seed=11)), (6,), "log joint for B = 6")


@JOINT.case("value", "matches the sum of torch.distributions.Normal log-densities, T = 3", points=2)
def _joint_value(fn):
    log_px, zs, means, logvars = _chain(5, (4, 3, 2), seed=12)
    ref = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(zs[-1]).sum(-1)
    for z, mu, lv in zip(zs[:-1], means, logvars):
        ref = ref + torch.distributions.Normal(mu, (0.5 * lv).exp()).log_prob(z).sum(-1)
    out = fn(log_px, zs, means, logvars)
    expect_shape(out, ref.shape, "log joint")
    diff = (out - ref).abs().max()
    if diff > 1e-3 and torch.allclose(out - ref, (out - ref).mean().expand_as(ref), atol=1e-3):
        raise Mismatch("your log joint is off by a constant: check the -1/2 log(2 pi) terms "
                       "(one per latent dimension, in every Gaussian, the prior included)")
    if diff > 1e-3:
        swapped = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(zs[0]).sum(-1)
        if zs[0].shape == zs[-1].shape and torch.allclose(out, swapped, atol=1e-3):
            raise Mismatch("the prior N(0, I) belongs to the top latent z_T = zs[-1], not to z_1")
    expect_close(out, ref, "log p(x, z_1:3)", atol=1e-4)


@JOINT.case("value", "T = 1 (no transitions): log p(z_1) + log p(x | z_1), a plain VAE")
def _joint_one_level(fn):
    log_px, zs, means, logvars = _chain(4, (3,), seed=13)
    expect_close(fn(log_px, zs, means, logvars),
                 reference_markov_log_joint(log_px, zs, means, logvars), "log joint with T = 1")


@JOINT.case("batching", "leading sample dimensions, (K, B, D_t) latents -> (K, B), T = 4")
def _joint_batching(fn):
    args = _chain(3, (6, 5, 4, 2), seed=14, lead=(7,))
    expect_close(fn(*args), reference_markov_log_joint(*args), "log joint on a (7, 3, D) batch",
                 atol=1e-4)


@JOINT.case("typical mistake", "log-variances are log sigma^2, not log sigma or sigma")
def _joint_logvar(fn):
    log_px, zs, means, _ = _chain(8, (4, 2), seed=15)
    logvars = [torch.full_like(means[0], 1.5)]                      # sigma^2 = e^1.5, far from 1
    out = fn(log_px, zs, means, logvars)
    ref = reference_markov_log_joint(log_px, zs, means, logvars)
    expect_shape(out, ref.shape, "log joint")
    for wrong in (0.5, 2.0):                                      # logvar read as log sigma or 1/2 ...
        alt = reference_markov_log_joint(log_px, zs, means, [lv * wrong for lv in logvars])
        if torch.allclose(out, alt, atol=1e-4):
            raise Mismatch("the transition variance is exp(logvar); your answer reads logvar on "
                           "another scale (as log sigma, or halved)")
    expect_close(out, ref, "log joint with logvar = 1.5", atol=1e-4)


# ------------------------------------------------------------ two-level ELBO
NEG_ELBO = exercise("03.hvae_neg_elbo", "The two-level negative ELBO (Luo Eq. 29, T = 2)")


def _noise(model: HVAE, B: int, seed: int):
    g = seeded(seed)
    return torch.randn(B, model.z1_dim, generator=g), torch.randn(B, model.z2_dim, generator=g)


def _run(fn, model: HVAE, x: torch.Tensor, seed: int):
    eps1, eps2 = _noise(model, len(x), seed)
    with torch.no_grad():
        out = fn(model, x, eps1, eps2)
        ref = reference_hvae_neg_elbo(model, x, eps1, eps2)
    if not isinstance(out, (tuple, list)) or len(out) != 4:
        raise Mismatch("return a tuple of four (B,) tensors: total, reconstruction, kl_bottom, kl_top")
    return out, ref


NAMES = ("total", "reconstruction", "kl_bottom", "kl_top")


@NEG_ELBO.case("shape", "four (B,) tensors for a (B, 1, 28, 28) batch")
def _elbo_shape(fn):
    model, x = _mnist_hvae(21), _digits(5, 21)
    out, _ = _run(fn, model, x, seed=21)
    for name, o in zip(NAMES, out):
        expect_shape(o, (5,), name)


@NEG_ELBO.case("value", "equals HVAE.neg_elbo with the same noise (MNIST, Bernoulli)", points=3)
def _elbo_value(fn):
    model, x = _mnist_hvae(22), _digits(6, 22)
    out, ref = _run(fn, model, x, seed=22)
    total, rec, klb, klt = out
    expect_close(rec, ref[1], "reconstruction = -log p(x | z1)", atol=1e-3)
    if torch.allclose(klt, gaussian_kl(*model.q_z2(model.q_z1(x)[0])), atol=1e-4) and \
            not torch.allclose(klt, ref[3], atol=1e-4):
        raise Mismatch("kl_top uses q(z2 | mu1); feed q(z2 | .) the sampled z1 = mu1 + sigma1 * eps1")
    expect_close(klt, ref[3], "kl_top = KL(q(z2 | z1) || N(0, I))", atol=1e-4)
    mu1, lv1 = model.q_z1(x)
    with torch.no_grad():
        z1 = reparameterize(mu1, lv1, _noise(model, len(x), 22)[0])
        analytic = gaussian_kl(mu1, lv1, *model.p_z1(
            reparameterize(*model.q_z2(z1), _noise(model, len(x), 22)[1])))
    if torch.allclose(klb, analytic, atol=1e-4) and not torch.allclose(klb, ref[2], atol=1e-4):
        raise Mismatch("kl_bottom here is the one-sample estimate log q(z1 | x) - log p(z1 | z2) at "
                       "the sampled z1 (p(z1 | z2) depends on z1 through z2, so the Gaussian "
                       "closed form does not give the ELBO term)")
    if torch.allclose(klb, -ref[2], atol=1e-4):
        raise Mismatch("kl_bottom has the wrong sign: it is log q(z1 | x) - log p(z1 | z2)")
    expect_close(klb, ref[2], "kl_bottom = log q(z1 | x) - log p(z1 | z2)", atol=1e-3)
    expect_close(total, ref[0], "total", atol=1e-3)


@NEG_ELBO.case("batching", "works for (B, 2) points with a Gaussian likelihood too")
def _elbo_points(fn):
    model = _toy_hvae(23)
    x = torch.randn(9, 2, generator=seeded(23))
    out, ref = _run(fn, model, x, seed=23)
    for name, o, r in zip(NAMES, out, ref):
        expect_close(o, r, f"{name} on (9, 2) points", atol=1e-4)


@NEG_ELBO.case("gradient", "the total is differentiable in the encoder's weights (reparameterised)")
def _elbo_gradient(fn):
    model, x = _mnist_hvae(24), _digits(4, 24)
    eps1, eps2 = _noise(model, 4, 24)
    total = fn(model, x, eps1, eps2)[0]
    if not isinstance(total, torch.Tensor) or not total.requires_grad:
        raise Mismatch("the total carries no gradient: compute it with torch operations")
    grads = torch.autograd.grad(total.sum(), list(model.q_z1.parameters()), allow_unused=True)
    if all(g is None or g.abs().sum() == 0 for g in grads):
        raise Mismatch("the total does not depend on q(z1 | x)'s weights")


# ------------------------------------------------------------ top-level KL
KL_TOP = exercise("03.kl_top", "The top level's KL per dimension, averaged over z1 ~ q(z1 | x)")


def _kl_inputs(model: HVAE, x: torch.Tensor, K: int, seed: int) -> torch.Tensor:
    return torch.randn(K, len(x), model.z1_dim, generator=seeded(seed))


@KL_TOP.case("shape", "(K, B, z1_dim) noise gives one KL per example and top dimension, (B, z2_dim)")
def _klt_shape(fn):
    model, x = _mnist_hvae(31), _digits(5, 31)
    with torch.no_grad():
        expect_shape(fn(model, x, _kl_inputs(model, x, 3, 31)), (5, model.z2_dim), "kl_top per dim")


@KL_TOP.case("value", "matches the reference on MNIST inputs, K = 4", points=2)
def _klt_value(fn):
    model, x = _mnist_hvae(32), _digits(6, 32)
    eps1 = _kl_inputs(model, x, 4, 32)
    with torch.no_grad():
        out, ref = fn(model, x, eps1), reference_kl_top(model, x, eps1)
        expect_shape(out, ref.shape, "kl_top per dim")
        if torch.allclose(out.sum(-1), ref.sum(-1), atol=1e-4) and not torch.allclose(out, ref, atol=1e-4):
            raise Mismatch("the total is right but not the split: keep one KL per dimension of z2")
        at_mean = gaussian_kl(*(v[..., None] for v in model.q_z2(model.q_z1(x)[0])))
        if torch.allclose(out, at_mean, atol=1e-4):
            raise Mismatch("you evaluated q(z2 | z1) at z1 = mu1 only; average over the K draws "
                           "z1 = mu1 + sigma1 * eps1[k]")
        mu2, lv2 = model.q_z2(reparameterize(*model.q_z1(x), eps1).flatten(0, 1))
        reverse = 0.5 * ((-lv2).exp() + mu2.pow(2) * (-lv2).exp() - 1 + lv2)
        if torch.allclose(out, reverse.view(4, 6, -1).mean(0), atol=1e-4):
            raise Mismatch("that is KL(N(0, 1) || q(z2 | z1)); the ELBO needs KL(q(z2 | z1) || N(0, 1))")
    expect_close(out, ref, "kl_top per dim", atol=1e-4)


@KL_TOP.case("batching", "works for a (B, 2)-data HVAE and K = 1")
def _klt_points(fn):
    model = _toy_hvae(33)
    x = torch.randn(7, 2, generator=seeded(33))
    eps1 = _kl_inputs(model, x, 1, 33)
    with torch.no_grad():
        expect_close(fn(model, x, eps1), reference_kl_top(model, x, eps1), "kl_top per dim, K = 1")


@KL_TOP.case("property", "summed over dimensions it averages HVAE.neg_elbo's kl_top")
def _klt_property(fn):
    model, x = _mnist_hvae(34), _digits(3, 34)
    K = 2000
    g = seeded(34)
    with torch.no_grad():
        out = fn(model, x, torch.randn(K, 3, model.z1_dim, generator=g)).sum(-1)
        x_rep = x.repeat(200, 1, 1, 1)                                     # (600, 1, 28, 28)
        draws = model.neg_elbo(x_rep, generator=g).kl_top.view(200, 3)     # (200, 3)
    se = draws.std(0) / 200 ** 0.5 + 1e-3
    if ((out - draws.mean(0)).abs() > 5 * se).any():
        raise Mismatch(f"sum over dims {out.tolist()} vs mean of neg_elbo().kl_top "
                       f"{draws.mean(0).tolist()}: more than 5 standard errors apart")
