"""Gaussian identities used everywhere in the course (notebook 00).

Diagonal Gaussians are given by their mean and log-variance, as VAE encoders output them:
N(mu, diag(exp(logvar))). Every function works on batches: the last dimension is the event
dimension D, all leading dimensions are batch dimensions.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._checks import check_tensor


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor,
                mu_p: torch.Tensor | None = None, logvar_p: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu_q, diag var_q) || N(mu_p, diag var_p)), summed over the last dimension.

    KL = 1/2 sum_i [ var_q/var_p + (mu_q - mu_p)^2 / var_p - 1 + log var_p - log var_q ],
    the diagonal case of the lecture chapter's Prop. 1.5. With mu_p, logvar_p omitted, p is the
    standard normal N(0, I) (the VAE prior, chapter Eq. 1.2). Shapes: (..., D) -> (...).
    """
    check_tensor("mu_q", mu_q, floating=True)
    check_tensor("logvar_q", logvar_q, floating=True)
    mu_p = torch.zeros_like(mu_q) if mu_p is None else check_tensor("mu_p", mu_p, floating=True)
    logvar_p = (torch.zeros_like(logvar_q) if logvar_p is None
                else check_tensor("logvar_p", logvar_p, floating=True))
    per_dim = 0.5 * ((logvar_q - logvar_p).exp() + (mu_q - mu_p).pow(2) / logvar_p.exp()
                     - 1.0 + logvar_p - logvar_q)
    return per_dim.sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with sigma = exp(logvar / 2) and eps ~ N(0, I).

    The reparameterisation trick (Kingma & Welling 2014; Strümke & Langseth, App. A.2): the
    randomness sits in eps, so z is a differentiable function of (mu, logvar). The three
    tensors broadcast: one (D,) mean with a (M, D) batch of eps gives M samples.
    """
    check_tensor("mu", mu, floating=True)
    check_tensor("logvar", logvar, floating=True)
    shapes = [mu.shape, logvar.shape] + ([eps.shape] if eps is not None else [])
    try:
        shape = torch.broadcast_shapes(*shapes)
    except RuntimeError:
        names = "mu and logvar" + (" and eps" if eps is not None else "")
        raise ValueError(f"{names} must broadcast to one shape, got "
                         f"{', '.join(str(tuple(s)) for s in shapes)}") from None
    if eps is None:
        eps = torch.randn(shape, generator=generator, dtype=mu.dtype).to(mu.device)
    return mu + (0.5 * logvar).exp() * eps


def mc_estimate(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte Carlo estimate of E[f(X)] from M samples x (M, ...) and its standard error.

    mu_hat = 1/M sum_m f(x_m) (Strümke & Langseth, Eq. 45); since Var[mu_hat] = Var[f(X)] / M,
    the standard error is s / sqrt(M) with s the sample standard deviation (ddof = 1).
    f maps the (M, ...) samples to (M,) or (M, K) values; returns tensors of shape () or (K,).
    """
    check_tensor("x", x)
    if x.ndim == 0 or x.shape[0] < 2:
        raise ValueError(f"x must hold M >= 2 samples along its first dimension, got shape "
                         f"{tuple(x.shape)}")
    m = x.shape[0]
    values = f(x)
    if values.shape[:1] != (m,):
        raise ValueError(f"f must return one value per sample, shape ({m}, ...), got {tuple(values.shape)}")
    return values.mean(0), values.std(0) / m**0.5


def linear_gaussian_posterior(z: torch.Tensor, mu0: torch.Tensor, gamma0: float, c: float,
                              b: float | torch.Tensor, gamma: float) -> tuple[torch.Tensor, float]:
    """Posterior of mu given z when mu ~ N(mu0, gamma0 I) and z | mu ~ N(c mu + b, gamma I).

    mu | z ~ N( gamma/(gamma + c^2 gamma0) mu0 + c gamma0/(gamma + c^2 gamma0) (z - b),
                gamma0 gamma/(gamma + c^2 gamma0) I )                 (Stratos, Eq. 10)
    Returns the posterior mean (shape of z) and the posterior variance (a float).
    """
    check_tensor("z", z, floating=True)
    if gamma0 <= 0 or gamma <= 0:
        raise ValueError(f"gamma0 and gamma must be positive variances, got {gamma0} and {gamma}")
    denom = gamma + c**2 * gamma0
    mean = (gamma / denom) * mu0 + (c * gamma0 / denom) * (z - b)
    return mean, gamma0 * gamma / denom
