"""The evidence lower bound on a model where everything is exact (notebook 01).

The model is a one-dimensional linear-Gaussian latent-variable model,

    z ~ p(z) = N(0, 1),        x | z ~ p(x | z) = N(w z + b, s^2),

so the evidence p(x) (Luo 2022, Eq. 1), the posterior p(z | x), the ELBO of any Gaussian
q(z) = N(q_mean, q_var) (Luo Eq. 8) and the gap KL(q || p(z | x)) (Luo Eq. 15) all have closed
forms, and every Monte Carlo estimator can be checked against them. `iwae_from_log_weights` is
the importance-weighted bound of Burda et al. (2016), shared with `course_lib.vae`.

All methods are vectorised: x is a tensor of any shape (a batch of scalars); q_mean and q_var
are numbers or tensors that broadcast against x. Results have the broadcast shape.
"""
from __future__ import annotations

import math
import numbers

import torch

from ._checks import check_positive_int, check_tensor
from .gaussians import gaussian_kl, mc_estimate

LOG_2PI = math.log(2 * math.pi)


def iwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K sum_k w_k) from log-weights log w_k = log p(x, z_k) - log q(z_k | x), z_k ~ q.

    The importance-weighted bound L_K of Burda et al. (2016), Eq. 8, computed as a stable
    log-mean-exp over the last axis (logsumexp minus log K). With K = 1 it is the one-sample
    ELBO estimate; E[L_K] increases with K towards log p(x). Shapes: (..., K) -> (...).
    """
    check_tensor("log_w", log_w, floating=True)
    if log_w.ndim == 0 or log_w.shape[-1] == 0:
        raise ValueError(f"log_w must have K >= 1 weights along its last dimension, "
                         f"got shape {tuple(log_w.shape)}")
    return torch.logsumexp(log_w, dim=-1) - math.log(log_w.shape[-1])


def log_normal(x: torch.Tensor, mean: torch.Tensor | float, var: torch.Tensor | float) -> torch.Tensor:
    """log N(x; mean, var) = -1/2 [log(2 pi var) + (x - mean)^2 / var], elementwise."""
    var = torch.as_tensor(var, dtype=x.dtype, device=x.device)
    return -0.5 * (LOG_2PI + var.log() + (x - mean) ** 2 / var)


def _as_tensor(name: str, value, like: torch.Tensor | None = None) -> torch.Tensor:
    """A real number or a floating-point tensor, as a tensor (dtype and device of `like`)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if like is None:
            return torch.tensor(float(value))
        return torch.tensor(float(value), dtype=like.dtype, device=like.device)
    return check_tensor(name, value, floating=True)


def _as_variance(name: str, value, like: torch.Tensor) -> torch.Tensor:
    """A variance: a positive number or tensor of positive values."""
    var = _as_tensor(name, value, like)
    if not bool((var > 0).all()):
        raise ValueError(f"{name} must be > 0 (a variance), got minimum {var.min().item():.3g}")
    return var


class LinearGaussianModel:
    """z ~ N(0, 1), x | z ~ N(w z + b, s^2): the exact latent-variable model of notebook 01.

    Args:
        w: the loading (a real number).
        b: the offset (a real number).
        s: the observation noise standard deviation, > 0.
    """

    def __init__(self, w: float, b: float, s: float):
        for name, value in (("w", w), ("b", b), ("s", s)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        if s <= 0:
            raise ValueError(f"s must be > 0 (a standard deviation), got {s}")
        self.w, self.b, self.s = float(w), float(b), float(s)

    def __repr__(self) -> str:
        return f"LinearGaussianModel(w={self.w}, b={self.b}, s={self.s})"

    # ------------------------------------------------------------------ the model itself
    def sample(self, n: int, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws (x, z) ~ p(z) p(x | z) (ancestral sampling), each of shape (n,)."""
        check_positive_int("n", n)
        z = torch.randn(n, generator=generator)                         # (n,)
        x = self.w * z + self.b + self.s * torch.randn(n, generator=generator)
        return x, z

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log N(z; 0, 1) + log N(x; w z + b, s^2) (Luo Eq. 17, chain rule)."""
        x, z = _as_tensor("x", x), _as_tensor("z", z)
        return log_normal(z, 0.0, 1.0) + log_normal(x, self.w * z + self.b, self.s ** 2)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) = log N(x; b, w^2 + s^2).

        The integral of Luo Eq. 1 is a sum of independent Gaussians here: x = w z + b + s eps
        with z, eps ~ N(0, 1) has mean b and variance w^2 + s^2.
        """
        x = _as_tensor("x", x)
        return log_normal(x, self.b, self.w ** 2 + self.s ** 2)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z | x) = N(w (x - b) / (w^2 + s^2), s^2 / (w^2 + s^2)): (mean, var), each shaped like x.

        Gaussian conditioning of the joint of (z, x) (Stratos, Eq. 10, with prior N(0, 1)):
        Cov(z, x) = w, Var(x) = w^2 + s^2, so mean = w (x - b) / Var(x), var = 1 - w^2 / Var(x).
        """
        x = _as_tensor("x", x)
        var_x = self.w ** 2 + self.s ** 2
        mean = self.w * (x - self.b) / var_x
        return mean, torch.full_like(mean, self.s ** 2 / var_x)

    # ------------------------------------------------------------------ the bound
    def elbo(self, x: torch.Tensor, q_mean: torch.Tensor | float, q_var: torch.Tensor | float
             ) -> torch.Tensor:
        """ELBO(q) = E_q[log p(x, z)] + H[q] for q(z) = N(m, v), in closed form (Luo Eq. 8).

        With z ~ N(m, v), E[z^2] = m^2 + v and E[(x - b - w z)^2] = (x - b - w m)^2 + w^2 v, so

            E_q[log p(z)]     = -1/2 [log 2 pi + m^2 + v]
            E_q[log p(x | z)] = -1/2 [log(2 pi s^2) + ((x - b - w m)^2 + w^2 v) / s^2]
            H[q]              =  1/2 [log(2 pi v) + 1]

        and the ELBO is their sum; it equals log p(x) - KL(q || p(z | x)) (Luo Eq. 15).
        """
        x = _as_tensor("x", x)
        m, v = _as_tensor("q_mean", q_mean, x), _as_variance("q_var", q_var, x)
        w, b, s2 = self.w, self.b, self.s ** 2
        e_log_prior = -0.5 * (LOG_2PI + m ** 2 + v)
        e_log_lik = -0.5 * (LOG_2PI + math.log(s2) + ((x - b - w * m) ** 2 + w ** 2 * v) / s2)
        entropy = 0.5 * (LOG_2PI + v.log() + 1.0)
        return e_log_prior + e_log_lik + entropy

    def _log_weights(self, x: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                     eps: torch.Tensor) -> torch.Tensor:
        """log p(x, z) - log q(z) at the reparameterised z = m + sqrt(v) eps."""
        z = m + v.sqrt() * eps
        return self.log_joint(x, z) - log_normal(z, m, v)

    def elbo_mc(self, x: torch.Tensor, q_mean: torch.Tensor | float, q_var: torch.Tensor | float,
                M: int = 1000, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Monte Carlo ELBO 1/M sum_m [log p(x, z_m) - log q(z_m)], z_m = m + sqrt(v) eps_m.

        The expectation of Luo Eq. 8 estimated with M reparameterised draws from q (Kingma &
        Welling 2014); returns the estimate and its standard error (`gaussians.mc_estimate`).
        """
        x = _as_tensor("x", x)
        m, v = _as_tensor("q_mean", q_mean, x), _as_variance("q_var", q_var, x)
        check_positive_int("M", M)
        if M < 2:
            raise ValueError(f"M must be >= 2 to estimate a standard error, got {M}")
        shape = torch.broadcast_shapes(x.shape, m.shape, v.shape)
        eps = torch.randn((M, *shape), generator=generator, dtype=x.dtype).to(x.device)  # (M, ...)
        return mc_estimate(lambda e: self._log_weights(x, m, v, e), eps)

    def iwae_bound(self, x: torch.Tensor, q_mean: torch.Tensor | float, q_var: torch.Tensor | float,
                   K: int = 10, n_rep: int = 100, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """L_K = E[log 1/K sum_k p(x, z_k) / q(z_k)], z_k ~ q i.i.d. (Burda et al. 2016, Eq. 8).

        Each replicate draws K samples and computes one value of the bound
        (`iwae_from_log_weights`); returns the mean over n_rep replicates and its standard
        error. L_1 is the ELBO, and L_K increases with K to log p(x).
        """
        x = _as_tensor("x", x)
        m, v = _as_tensor("q_mean", q_mean, x), _as_variance("q_var", q_var, x)
        check_positive_int("K", K)
        check_positive_int("n_rep", n_rep)
        if n_rep < 2:
            raise ValueError(f"n_rep must be >= 2 to estimate a standard error, got {n_rep}")
        shape = torch.broadcast_shapes(x.shape, m.shape, v.shape)
        eps = torch.randn((n_rep, *shape, K), generator=generator, dtype=x.dtype).to(x.device)

        def one_bound(e: torch.Tensor) -> torch.Tensor:               # (n_rep, ..., K) -> (n_rep, ...)
            log_w = self._log_weights(x[..., None], m[..., None], v[..., None], e)
            return iwae_from_log_weights(log_w)
        return mc_estimate(one_bound, eps)

    def kl_to_posterior(self, x: torch.Tensor, q_mean: torch.Tensor | float,
                        q_var: torch.Tensor | float) -> torch.Tensor:
        """KL(q || p(z | x)) for q = N(m, v): the gap log p(x) - ELBO(q) (Luo Eq. 15).

        Both are Gaussians, so the KL is the closed form of the lecture chapter, Prop. 1.5
        (`gaussians.gaussian_kl` with a one-dimensional event).
        """
        x = _as_tensor("x", x)
        m, v = _as_tensor("q_mean", q_mean, x), _as_variance("q_var", q_var, x)
        post_mean, post_var = self.posterior(x)
        m, v, post_mean, post_var = torch.broadcast_tensors(m, v, post_mean, post_var)
        return gaussian_kl(m[..., None], v.log()[..., None], post_mean[..., None], post_var.log()[..., None])
