"""Discrete-time diffusion: the forward process q, the model's reverse process p, losses, ELBO
terms, and the DDPM and DDIM samplers (notebooks 04-07).

Plain functions in the spirit of improved-diffusion's `gaussian_diffusion.py`, with the schedule
passed in (see `course_lib.schedules`; `alpha_bars[t]` is alpha-bar_t, t = 1..T as in the texts,
diffusers' `alphas_cumprod[t - 1]`). Conventions:

- Data x0, xt: a batch (B, ...) -- 2-D points (B, 2) and images (B, 1, 28, 28) alike. A
  per-sample coefficient (B,) is reshaped to (B, 1, ..., 1) by `broadcast`.
- t: an int, or an integer tensor of shape () or (B,), with values in 1..T.
- The network is not called here except by `eps_fn_from_model` and the loss: samplers and ELBO
  take `eps_fn(xt, t) -> eps_pred` with t a (B,) long tensor, so an exact oracle
  (`eps_fn_from_score_fn`) or a guided model plugs in the same way.
- Schedule coefficients (float64) are cast to the dtype and device of the data where used.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ._checks import check_choice, check_in_range, check_positive_int, check_tensor
from .gaussians import gaussian_kl
from .schedules import Schedule, prior_kl

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PARAMETERISATIONS = ("eps", "x0", "score")
WEIGHTINGS = ("simple", "elbo")
SIGMAS = ("posterior", "beta")


# ============================================================================ helpers

def broadcast(coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample coefficient (B,) (or a scalar) to (B, 1, ..., 1) to multiply x (B, ...).

    Also casts it to x's dtype and device.
    """
    coef = torch.as_tensor(coef).to(device=x.device, dtype=x.dtype)
    return coef.reshape(-1, *([1] * (x.ndim - 1)))


def _check_x(name: str, x) -> torch.Tensor:
    check_tensor(name, x, floating=True)
    if x.ndim < 2:
        raise ValueError(f"{name} must be a batch (B, ...) with at least 2 dimensions, e.g. (B, 2) "
                         f"or (B, 1, 28, 28); got shape {tuple(x.shape)}")
    return x


def _steps(name: str, t, x: torch.Tensor, T: int, low: int = 1) -> torch.Tensor:
    """t (an int, or an integer tensor () or (B,)) as a (B,) long tensor on x's device, in low..T."""
    B = x.shape[0]
    if isinstance(t, bool) or not isinstance(t, (numbers.Integral, torch.Tensor)):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
    t = torch.as_tensor(t, device=x.device)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must hold integer steps, got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.expand(B)
    if t.shape != (B,):
        raise ValueError(f"{name} must be an int or a ({B},) tensor to match the batch, got shape "
                         f"{tuple(t.shape)}")
    lo, hi = int(t.min()), int(t.max())
    if lo < low or hi > T:
        raise ValueError(f"{name} must lie in {low}..T = {low}..{T}, got values in {lo}..{hi}")
    return t.long()


def _at(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values[t] for a (T+1,) schedule array and (B,) steps, as (B, 1, ..., 1) in x's dtype."""
    return broadcast(values[t.to(values.device)], x)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of x's shape, dtype and device (drawn on the generator's device)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)


def _check_noise(noise, x: torch.Tensor) -> torch.Tensor:
    check_tensor("noise", noise, floating=True)
    if noise.shape != x.shape:
        raise ValueError(f"noise must have the shape of xt {tuple(x.shape)}, got {tuple(noise.shape)}")
    return noise


def _sum_per_example(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).sum(1)                        # (B, ...) -> (B,)


# ============================================================================ forward process q

def q_sample(x0: torch.Tensor, t, schedule: Schedule, eps: torch.Tensor | None = None,
             generator: torch.Generator | None = None, return_eps: bool = False):
    """Sample x_t ~ q(x_t | x_0):  x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps.

    Luo (2022), Eq. 70 (Stratos, Lemma 2.1); eps ~ N(0, I) unless given. Returns x_t, or
    (x_t, eps) with `return_eps=True`. Shapes: x_0 (B, ...), t (B,) or int.
    """
    _check_x("x0", x0)
    t = _steps("t", t, x0, schedule.T)
    if eps is None:
        eps = _randn_like(x0, generator)
    elif check_tensor("eps", eps, floating=True).shape != x0.shape:
        raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
    alpha_bar_t = _at(schedule.alpha_bars, t, x0)                  # (B, 1, ..., 1)
    xt = alpha_bar_t.sqrt() * x0 + (1 - alpha_bar_t).sqrt() * eps
    return (xt, eps) if return_eps else xt


def posterior_variances(schedule: Schedule) -> torch.Tensor:
    """beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) * beta_t for t = 0..T (entry 0 = 0).

    The variance of q(x_{t-1} | x_t, x_0) (Luo 2022, Eq. 85; Stratos Eq. 13); beta-tilde_1 = 0.
    """
    ab = schedule.alpha_bars
    out = torch.zeros_like(ab)
    out[1:] = (1 - ab[:-1]) / (1 - ab[1:]) * schedule.betas[1:]
    return out


def q_posterior_mean_variance(x0: torch.Tensor, xt: torch.Tensor, t, schedule: Schedule
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) = N(mu_q, beta-tilde_t I):

        mu_q = sqrt(alpha-bar_{t-1}) beta_t / (1 - alpha-bar_t) x_0
               + sqrt(alpha_t) (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) x_t,
        beta-tilde_t = (1 - alpha-bar_{t-1}) / (1 - alpha-bar_t) beta_t.

    Luo (2022), Eq. 84; Stratos, Eq. 11-13. Returns mean (B, ...) and variance (B, 1, ..., 1).
    """
    _check_x("x0", x0)
    _check_x("xt", xt)
    if x0.shape != xt.shape:
        raise ValueError(f"x0 and xt must have one shape, got {tuple(x0.shape)} and {tuple(xt.shape)}")
    t = _steps("t", t, xt, schedule.T)
    beta_t = _at(schedule.betas, t, xt)
    alpha_t = _at(schedule.alphas, t, xt)
    alpha_bar_t = _at(schedule.alpha_bars, t, xt)
    alpha_bar_prev = _at(schedule.alpha_bars, t - 1, xt)
    mean = (alpha_bar_prev.sqrt() * beta_t * x0 + alpha_t.sqrt() * (1 - alpha_bar_prev) * xt
            ) / (1 - alpha_bar_t)
    variance = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
    return mean, variance


# ============================================================================ conversions

def x0_from_eps(xt: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """x_0 = (x_t - sqrt(1 - alpha-bar_t) eps) / sqrt(alpha-bar_t)   (Luo 2022, Eq. 115)."""
    alpha_bar_t = _at(schedule.alpha_bars, _steps("t", t, _check_x("xt", xt), schedule.T), xt)
    return (xt - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()


def eps_from_x0(xt: torch.Tensor, t, x0: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """eps = (x_t - sqrt(alpha-bar_t) x_0) / sqrt(1 - alpha-bar_t)   (Luo 2022, Eq. 115 solved for eps)."""
    alpha_bar_t = _at(schedule.alpha_bars, _steps("t", t, _check_x("xt", xt), schedule.T), xt)
    return (xt - alpha_bar_t.sqrt() * x0) / (1 - alpha_bar_t).sqrt()


def score_from_eps(xt: torch.Tensor, t, eps: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """score = -eps / sqrt(1 - alpha-bar_t)   (Luo 2022, Eq. 151). x_t only fixes the batch."""
    alpha_bar_t = _at(schedule.alpha_bars, _steps("t", t, _check_x("xt", xt), schedule.T), xt)
    return -eps / (1 - alpha_bar_t).sqrt()


def eps_from_score(xt: torch.Tensor, t, score: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """eps = -sqrt(1 - alpha-bar_t) score   (Luo 2022, Eq. 151). x_t only fixes the batch."""
    alpha_bar_t = _at(schedule.alpha_bars, _steps("t", t, _check_x("xt", xt), schedule.T), xt)
    return -(1 - alpha_bar_t).sqrt() * score


def x0_from_score(xt: torch.Tensor, t, score: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Tweedie: E[x_0 | x_t] = (x_t + (1 - alpha-bar_t) score) / sqrt(alpha-bar_t)   (Luo 2022, Eq. 133)."""
    alpha_bar_t = _at(schedule.alpha_bars, _steps("t", t, _check_x("xt", xt), schedule.T), xt)
    return (xt + (1 - alpha_bar_t) * score) / alpha_bar_t.sqrt()


def clipped_eps(eps_pred: torch.Tensor, xt: torch.Tensor, t, schedule: Schedule,
                clip_x0: float) -> torch.Tensor:
    """The eps that predicts x0_pred clipped to [-clip_x0, clip_x0]:

        x0_pred = clamp(`x0_from_eps`(x_t, t, eps_pred), -c, c),   eps = `eps_from_x0`(x_t, t, x0_pred).

    Data known to lie in [-c, c] (images scaled to [-1, 1]) lets a sampler discard the part of a
    prediction that points outside it. At large t, where x0_pred divides by a tiny sqrt(alpha-bar_t),
    this removes most of the early steps' error (``clip_denoised`` in Ho et al. 2020's code,
    ``clip_sample`` in diffusers). Not for unbounded data such as the 2-D mixtures.
    """
    check_in_range("clip_x0", clip_x0, 0, math.inf, low_open=True, high_open=True)
    x0_pred = x0_from_eps(xt, t, eps_pred, schedule).clamp(-clip_x0, clip_x0)
    return eps_from_x0(xt, t, x0_pred, schedule)


def eps_fn_from_model(model: nn.Module | Callable, schedule: Schedule, parameterisation: str = "eps",
                      y: torch.Tensor | None = None) -> EpsFn:
    """eps_fn(x_t, t) -> eps_pred from a network predicting eps, x_0 or the score.

    The network is called as ``model(xt, t_float)`` (or ``model(xt, t_float, y)``), t_float a (B,)
    tensor of xt's dtype holding the integer step. Its output is converted to eps with `eps_from_x0` or
    `eps_from_score` (Luo 2022, Eq. 115 and 151).
    """
    check_choice("parameterisation", parameterisation, PARAMETERISATIONS)
    if not callable(model):
        raise TypeError(f"model must be callable as model(xt, t), got {type(model).__name__}")

    def eps_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_float = t.to(device=xt.device, dtype=xt.dtype)          # (B,) the step, as a float
        out = model(xt, t_float) if y is None else model(xt, t_float, y)
        if parameterisation == "x0":
            return eps_from_x0(xt, t, out, schedule)
        if parameterisation == "score":
            return eps_from_score(xt, t, out, schedule)
        return out

    return eps_fn


def eps_fn_from_score_fn(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         schedule: Schedule) -> EpsFn:
    """eps_fn(x_t, t) = -sqrt(1 - alpha-bar_t) score_fn(x_t, t)   (Luo 2022, Eq. 151).

    With the exact score of a known data distribution (e.g. the Gaussian-mixture oracle,
    ``lambda x, t: mixture.marginal_score(x, schedule.alpha_bars[t])``), the samplers need no
    training.
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(xt, t), got {type(score_fn).__name__}")

    def eps_fn(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return eps_from_score(xt, t, score_fn(xt, t).to(xt), schedule)

    return eps_fn


# ============================================================================ the model's p

def model_variances(schedule: Schedule, sigma: str = "posterior") -> torch.Tensor:
    """sigma_t^2 of p(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I) for t = 0..T (entry 0 unused, 0).

    ``"posterior"``: sigma_t^2 = beta-tilde_t (Luo 2022, Eq. 85); ``"beta"``: sigma_t^2 = beta_t
    (Ho et al. 2020, Sec. 3.2, the two extremes). beta-tilde_1 = 0 would make the decoder
    p(x_0 | x_1) a point mass, so with ``"posterior"`` sigma_1^2 = beta-tilde_2 instead, as in
    improved-diffusion (`posterior_log_variance_clipped`); with T = 1, sigma_1^2 = beta_1.
    """
    check_choice("sigma", sigma, SIGMAS)
    if sigma == "beta":
        return schedule.betas.clone()
    var = posterior_variances(schedule)
    var[1] = var[2] if schedule.T >= 2 else schedule.betas[1]
    return var


def p_mean_variance(eps_pred: torch.Tensor, xt: torch.Tensor, t, schedule: Schedule,
                    sigma: str = "posterior") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of the model's step p(x_{t-1} | x_t) = N(mu_theta, sigma_t^2 I).

    mu_theta = mu_q(x_t, x0_pred) with x0_pred = `x0_from_eps`(x_t, t, eps_pred): the true
    posterior mean with x_0 replaced by its prediction (Luo 2022, Eq. 94), which equals
    1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps_pred) (Luo Eq. 125; Stratos Eq. 17).
    sigma_t^2 from `model_variances`. Returns mean (B, ...) and variance (B, 1, ..., 1).
    """
    _check_x("xt", xt)
    t = _steps("t", t, xt, schedule.T)
    x0_pred = x0_from_eps(xt, t, eps_pred, schedule)
    mean, _ = q_posterior_mean_variance(x0_pred, xt, t, schedule)
    return mean, _at(model_variances(schedule, sigma), t, xt)


# ============================================================================ training losses

def elbo_weights(schedule: Schedule, parameterisation: str = "eps", sigma: str = "posterior"
                 ) -> torch.Tensor:
    """lambda_t, t = 0..T (entry 0 unused, 0), such that for t >= 2

        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) = lambda_t ||target - prediction||^2 + c_t

    with c_t = D/2 (beta-tilde_t / sigma_t^2 - 1 - log(beta-tilde_t / sigma_t^2)) free of the model
    (0 for sigma = "posterior"), and for t = 1 -log p(x_0 | x_1) = lambda_1 ||.||^2 + D/2 log(2 pi sigma_1^2):

        x0:    lambda_t = alpha-bar_{t-1} beta_t^2 / (2 sigma_t^2 (1 - alpha-bar_t)^2)   (Luo 2022, Eq. 99)
               [= 1/2 (SNR(t-1) - SNR(t)) when sigma_t^2 = beta-tilde_t, Luo Eq. 110]
        eps:   lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha-bar_t))   (Stratos Eq. 18; Luo Eq. 130)
        score: lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t)   (Luo Eq. 148)

    The eps and score forms follow from the x0 form by x_0 - x0_pred = -sqrt((1 - alpha-bar_t)
    / alpha-bar_t) (eps - eps_pred) and eps = -sqrt(1 - alpha-bar_t) score; the score target is
    the conditional score -eps / sqrt(1 - alpha-bar_t). At t = 1 the same formula is the weight
    of the reconstruction term (Stratos Eq. 4 with mu-tilde_1 = x_0).
    """
    check_choice("parameterisation", parameterisation, PARAMETERISATIONS)
    var = model_variances(schedule, sigma)                         # (T+1,) sigma_t^2
    beta, alpha, ab = schedule.betas, schedule.alphas, schedule.alpha_bars
    w = torch.zeros_like(beta)
    b, a, abt, abp, v = beta[1:], alpha[1:], ab[1:], ab[:-1], var[1:]
    if parameterisation == "x0":
        w[1:] = abp * b**2 / (2 * v * (1 - abt) ** 2)
    elif parameterisation == "eps":
        w[1:] = b**2 / (2 * v * a * (1 - abt))
    else:
        w[1:] = b**2 / (2 * v * a)
    return w


def _elbo_offsets(schedule: Schedule, sigma: str) -> torch.Tensor:
    """The model-free part c_t / D of each ELBO term (see `elbo_weights`), t = 0..T."""
    var = model_variances(schedule, sigma)
    ratio = posterior_variances(schedule)[2:] / var[2:]           # beta-tilde_t / sigma_t^2, t >= 2
    c = torch.zeros_like(var)
    c[1] = 0.5 * torch.log(2 * math.pi * var[1])
    c[2:] = 0.5 * (ratio - 1 - ratio.log())
    return c


def _target(parameterisation: str, x0, eps, xt, t, schedule) -> torch.Tensor:
    if parameterisation == "eps":
        return eps
    if parameterisation == "x0":
        return x0
    return score_from_eps(xt, t, eps, schedule)                    # -eps / sqrt(1 - alpha-bar_t)


def diffusion_loss_per_example(model: nn.Module | Callable, x0: torch.Tensor, schedule: Schedule,
                               parameterisation: str = "eps", weighting: str = "simple",
                               y: torch.Tensor | None = None, generator: torch.Generator | None = None,
                               *, sigma: str = "posterior", t=None, eps: torch.Tensor | None = None
                               ) -> torch.Tensor:
    """The diffusion training loss of each example, (B,), with t ~ Uniform{1..T} per example.

    1. t ~ U{1..T}, eps ~ N(0, I), x_t = sqrt(alpha-bar_t) x_0 + sqrt(1 - alpha-bar_t) eps (Luo Eq. 70).
    2. prediction = model(x_t, t) (t passed as a float tensor holding the step), target = eps,
       x_0, or the conditional score -eps / sqrt(1 - alpha-bar_t).
    3. ``"simple"``: ||target - prediction||^2 averaged over the entries of an example (Ho et al.
       2020, Eq. 14, L_simple; improved-diffusion's `mean_flat`). With the score target, whose
       size is 1 / sqrt(1 - alpha-bar_t), small t dominate (weighting the score error by
       1 - alpha-bar_t gives back the eps loss).
       ``"elbo"``: T (lambda_t ||target - prediction||^2 + c_t), summed over entries, with lambda_t
       from `elbo_weights` and c_t its model-free constant: T times the ELBO term at t (the KL of
       step t for t >= 2, -log p(x_0 | x_1) for t = 1). Its expectation is therefore exactly
       ``elbo_terms(...).denoising + .reconstruction`` (in nats): the negative ELBO without its
       prior-matching term, which has no parameters. Gradients equal those of the weighted MSE.

    `t` and `eps` may be given (to evaluate a fixed step); `sigma` is the reverse variance the
    "elbo" weighting assumes.
    """
    _check_x("x0", x0)
    check_choice("parameterisation", parameterisation, PARAMETERISATIONS)
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("sigma", sigma, SIGMAS)
    T = schedule.T
    if t is None:                                                  # 1. t ~ U{1..T}
        gen_device = generator.device if generator is not None else x0.device
        t = torch.randint(1, T + 1, (x0.shape[0],), generator=generator, device=gen_device)
    t = _steps("t", t, x0, T)
    xt, eps = q_sample(x0, t, schedule, eps=eps, generator=generator, return_eps=True)
    t_float = t.to(x0.dtype)                                       # 2. the network's view of t
    prediction = model(xt, t_float) if y is None else model(xt, t_float, y)
    if prediction.shape != x0.shape:
        raise ValueError(f"model output must have the shape of x0 {tuple(x0.shape)}, got "
                         f"{tuple(prediction.shape)}")
    sq_err = (_target(parameterisation, x0, eps, xt, t, schedule) - prediction).pow(2)
    if weighting == "simple":                                      # 3.
        return sq_err.reshape(x0.shape[0], -1).mean(1)
    lam = _at(elbo_weights(schedule, parameterisation, sigma), t, x0).reshape(-1)   # (B,)
    c = _at(_elbo_offsets(schedule, sigma), t, x0).reshape(-1)                        # (B,)
    D = x0[0].numel()
    return T * (lam * _sum_per_example(sq_err) + D * c)


def diffusion_loss(model: nn.Module | Callable, x0: torch.Tensor, schedule: Schedule,
                   parameterisation: str = "eps", weighting: str = "simple",
                   y: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   **kwargs) -> torch.Tensor:
    """The batch mean of `diffusion_loss_per_example` (a scalar to minimise); same arguments."""
    return diffusion_loss_per_example(model, x0, schedule, parameterisation, weighting, y,
                                      generator, **kwargs).mean()


# ============================================================================ the ELBO

@dataclass(frozen=True, eq=False)
class ELBOTerms:
    """The terms of the negative ELBO of each example, in nats (Luo 2022, Eq. 58)."""

    prior: torch.Tensor           # (B,) KL(q(x_T | x_0) || N(0, I))
    denoising: torch.Tensor       # (B,) sum_{t=2}^T KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
    reconstruction: torch.Tensor  # (B,) -log p(x_0 | x_1)
    total: torch.Tensor           # (B,) prior + denoising + reconstruction = -ELBO >= -log p(x_0)

    def __str__(self) -> str:
        return (f"-ELBO {self.total.mean():.4f} nats = prior {self.prior.mean():.4f} + denoising "
                f"{self.denoising.mean():.4f} + reconstruction {self.reconstruction.mean():.4f}")


def _denoising_kl(eps_fn: EpsFn, x0: torch.Tensor, t: torch.Tensor, schedule: Schedule,
                  sigma: str, generator) -> torch.Tensor:
    """KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) at one x_t ~ q(x_t | x_0), per example (B,)."""
    t = _steps("t", t, x0, schedule.T)                              # (B,) long, as eps_fn expects
    xt = q_sample(x0, t, schedule, generator=generator)
    mu_q, var_q = q_posterior_mean_variance(x0, xt, t, schedule)
    mu_p, var_p = p_mean_variance(eps_fn(xt, t), xt, t, schedule, sigma)
    flat = lambda v: v.expand_as(x0).reshape(x0.shape[0], -1)     # noqa: E731  (B, D)
    return gaussian_kl(flat(mu_q), flat(var_q.log()), flat(mu_p), flat(var_p.log()))


@torch.no_grad()
def elbo_terms(eps_fn: EpsFn, x0: torch.Tensor, schedule: Schedule, sigma: str = "posterior",
               n_t: int | None = None, generator: torch.Generator | None = None,
               data_scale: float = 1.0) -> ELBOTerms:
    """The negative ELBO of a diffusion model, term by term, per example (Luo 2022, Eq. 58):

        -ELBO = KL(q(x_T | x_0) || N(0, I))                                  prior matching
              + sum_{t=2}^T E_q(x_t|x_0) KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))   denoising
              + E_q(x_1|x_0) [-log p(x_0 | x_1)]                              reconstruction

    - Each KL is between the Gaussians of `q_posterior_mean_variance` and `p_mean_variance`, in
      closed form (`gaussians.gaussian_kl`), at one sample x_t ~ q(x_t | x_0) per t and example.
      With `n_t`, the sum is estimated without bias from n_t steps t ~ U{2..T} per example,
      times (T - 1) / n_t.
    - The decoder is a continuous Gaussian, p(x_0 | x_1) = N(mu_theta(x_1, 1), sigma_1^2 I), with
      mu_theta(x_1, 1) = x0_pred(x_1) and sigma_1^2 from `model_variances` (beta-tilde_2 for
      "posterior"). It is a density, not a discretised likelihood (Ho et al. 2020, Sec. 3.3), so
      the values are comparable with the continuous -log p(x_0) of the 2-D toys and of Gaussians.
    - `data_scale`: if the model sees x_0 = (x_data - shift) / data_scale, the density of x_data
      is the model's divided by data_scale^D, so D log(data_scale) is added to `reconstruction`
      (and `total`), to report nats of the original data.
    Shapes: x_0 (B, ...) -> each term (B,).
    """
    _check_x("x0", x0)
    check_choice("sigma", sigma, SIGMAS)
    check_in_range("data_scale", data_scale, 0, math.inf, low_open=True, high_open=True)
    T, B, D = schedule.T, x0.shape[0], x0[0].numel()
    denoising = x0.new_zeros(B)
    if n_t is None:                                                # exact sum over t = 2..T
        for t in range(2, T + 1):
            denoising += _denoising_kl(eps_fn, x0, t, schedule, sigma, generator)
    elif T >= 2:                                                   # unbiased estimate
        check_positive_int("n_t", n_t)
        gen_device = generator.device if generator is not None else x0.device
        for _ in range(n_t):
            t = torch.randint(2, T + 1, (B,), generator=generator, device=gen_device)
            denoising += _denoising_kl(eps_fn, x0, t, schedule, sigma, generator)
        denoising *= (T - 1) / n_t
    x1 = q_sample(x0, 1, schedule, generator=generator)
    t1 = torch.ones(B, dtype=torch.long, device=x0.device)
    mu, var = p_mean_variance(eps_fn(x1, t1), x1, t1, schedule, sigma)
    nll = 0.5 * ((x0 - mu).pow(2) / var + torch.log(2 * math.pi * var))
    reconstruction = _sum_per_example(nll) + D * math.log(data_scale)
    prior = prior_kl(schedule, x0)
    return ELBOTerms(prior, denoising, reconstruction, prior + denoising + reconstruction)


# ============================================================================ DDPM

def ddpm_step(eps_pred: torch.Tensor, xt: torch.Tensor, t, schedule: Schedule,
              sigma: str = "posterior", noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None, clip_x0: float | None = None) -> torch.Tensor:
    """One ancestral step x_{t-1} ~ p(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I):

        x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha-bar_t) eps_pred) + sigma_t z,

    with z ~ N(0, I) (or `noise`), and no noise at t = 1 (Ho et al. 2020, Algorithm 2;
    Strümke & Langseth, Eq. 34 and Algorithm 2; Stratos Sec. 2.4). sigma_t^2 = beta-tilde_t or
    beta_t (`model_variances`). With `clip_x0` = c, eps_pred is first replaced by `clipped_eps`,
    so mu_theta is the posterior mean at the clipped x0_pred.
    """
    if clip_x0 is not None:
        eps_pred = clipped_eps(eps_pred, xt, t, schedule, clip_x0)
    mean, var = p_mean_variance(eps_pred, xt, t, schedule, sigma)
    t = _steps("t", t, xt, schedule.T)
    z = _randn_like(xt, generator) if noise is None else _check_noise(noise, xt)
    keep = broadcast((t > 1).to(xt.dtype), xt)                     # lambda = 0 at t = 1
    return mean + keep * var.sqrt() * z


def _batch_start(shape, xT, generator, device, dtype=torch.float32) -> torch.Tensor:
    if xT is not None:
        return _check_x("xT", xT)
    shape = tuple(shape)
    if len(shape) < 2 or any(not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be a batch shape (B, ...) of positive ints, e.g. (B, 2); got {shape}")
    device = torch.device(device) if device is not None else (
        generator.device if generator is not None else torch.device("cpu"))
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, dtype=dtype, device=gen_device).to(device)


def _progress(iterable, progress: bool, desc: str):
    if not progress:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, leave=False)


@torch.no_grad()
def ddpm_sample(eps_fn: EpsFn, shape: Sequence[int], schedule: Schedule, sigma: str = "posterior",
                generator: torch.Generator | None = None, device=None, return_trajectory: bool = False,
                progress: bool = False, xT: torch.Tensor | None = None, clip_x0: float | None = None):
    """Ancestral sampling: x_T ~ N(0, I), then `ddpm_step` for t = T, ..., 1 (Ho et al. 2020, Alg. 2).

    `shape` is the batch shape (B, ...); x_T float32 on `device` (default: the generator's device,
    else CPU), or pass `xT` itself. Returns x_0, or (x_0, trajectory) with trajectory[t] = x_t,
    a (T+1, B, ...) tensor on the CPU. `clip_x0`: see `clipped_eps` (1.0 for images in [-1, 1]).
    """
    check_choice("sigma", sigma, SIGMAS)
    x = _batch_start(shape, xT, generator, device)
    path = [x.cpu()] if return_trajectory else None
    for t in _progress(range(schedule.T, 0, -1), progress, "DDPM"):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)  # (B,)
        x = ddpm_step(eps_fn(x, t_batch), x, t_batch, schedule, sigma, generator=generator,
                      clip_x0=clip_x0)
        if return_trajectory:
            path.append(x.cpu())
    return (x, torch.stack(path[::-1])) if return_trajectory else x


# ============================================================================ DDIM

def ddim_sigma(schedule: Schedule, t, t_prev, eta: float = 0.0) -> torch.Tensor:
    """The DDIM noise scale of the step from t to t_prev:

        sigma_t(eta) = eta sqrt((1 - alpha-bar_prev) / (1 - alpha-bar_t))
                           sqrt(1 - alpha-bar_t / alpha-bar_prev)

    (Song et al. 2021, Eq. 16; Strümke & Langseth Sec. 2.4.2). eta = 1 on the full sequence is
    DDPM's sigma_t^2 = beta-tilde_t; eta = 0 is deterministic DDIM. t, t_prev: ints or tensors;
    returns values in the schedule's dtype (shape of t and t_prev broadcast).
    """
    check_in_range("eta", eta, 0, math.inf, high_open=True)
    ab = schedule.alpha_bars
    t, t_prev = torch.as_tensor(t, device=ab.device), torch.as_tensor(t_prev, device=ab.device)
    for name, s, low in (("t", t, 1), ("t_prev", t_prev, 0)):
        if s.dtype.is_floating_point or s.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer steps, got dtype {s.dtype}")
        if s.numel() and (int(s.min()) < low or int(s.max()) > schedule.T):
            raise ValueError(f"{name} must lie in {low}..T = {low}..{schedule.T}")
    if (t_prev >= t).any():
        raise ValueError("t_prev must be smaller than t")
    ab_t, ab_prev = ab[t], ab[t_prev]
    return eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()


def ddim_step(eps_pred: torch.Tensor, xt: torch.Tensor, t, t_prev, schedule: Schedule,
              eta: float = 0.0, noise: torch.Tensor | None = None,
              generator: torch.Generator | None = None, clip_x0: float | None = None) -> torch.Tensor:
    """One DDIM step from x_t to x_{t_prev}, t_prev < t (t_prev = 0: the last step, to x_0):

        x0_pred  = (x_t - sqrt(1 - alpha-bar_t) eps_pred) / sqrt(alpha-bar_t)          "predicted x_0"
        x_prev   = sqrt(alpha-bar_prev) x0_pred
                   + sqrt(1 - alpha-bar_prev - sigma_t^2) eps_pred                 "direction to x_t"
                   + sigma_t z                                                     "noise"

    with sigma_t = `ddim_sigma`(t, t_prev, eta) and alpha-bar_0 = 1 (Song et al. 2021, Eq. 12;
    Stratos Sec. 3.3, Eq. 22; Strümke & Langseth Eq. 37). Symbols vs diffusers' `DDIMScheduler.step`:
    alpha-bar_t = alpha_prod_t, alpha-bar_prev = alpha_prod_t_prev, x0_pred = pred_original_sample.
    eta > 1 can make 1 - alpha-bar_prev - sigma_t^2 negative; it is clamped at 0. With `clip_x0`
    = c, eps_pred is first replaced by `clipped_eps`, so x0_pred lies in [-c, c] and the direction
    term points at it (as diffusers' ``clip_sample``).
    """
    _check_x("xt", xt)
    check_in_range("eta", eta, 0, math.inf, high_open=True)
    t = _steps("t", t, xt, schedule.T)
    t_prev = _steps("t_prev", t_prev, xt, schedule.T - 1, low=0)
    if (t_prev >= t).any():
        raise ValueError("t_prev must be smaller than t for every sample")
    if clip_x0 is not None:
        eps_pred = clipped_eps(eps_pred, xt, t, schedule, clip_x0)
    alpha_bar_t = _at(schedule.alpha_bars, t, xt)                  # (B, 1, ..., 1)
    alpha_bar_prev = _at(schedule.alpha_bars, t_prev, xt)
    sigma_t = broadcast(ddim_sigma(schedule, t.to(schedule.alpha_bars.device),
                                   t_prev.to(schedule.alpha_bars.device), eta), xt)
    x0_pred = (xt - (1 - alpha_bar_t).sqrt() * eps_pred) / alpha_bar_t.sqrt()      # 1.
    direction = (1 - alpha_bar_prev - sigma_t**2).clamp_min(0).sqrt() * eps_pred  # 2.
    x_prev = alpha_bar_prev.sqrt() * x0_pred + direction
    if eta == 0:
        return x_prev
    z = _randn_like(xt, generator) if noise is None else _check_noise(noise, xt)   # 3.
    return x_prev + sigma_t * z


def ddim_timesteps(T: int, n_steps: int) -> list[int]:
    """n_steps evenly spaced steps tau_1 < ... < tau_n = T in 1..T: tau_i = round(i T / n_steps).

    The spacing that ends at T ("trailing" in diffusers); n_steps = T gives 1..T.
    """
    check_positive_int("T", T)
    check_positive_int("n_steps", n_steps)
    if n_steps > T:
        raise ValueError(f"n_steps must be <= T = {T}, got {n_steps}")
    return [(2 * i * T + n_steps) // (2 * n_steps) for i in range(1, n_steps + 1)]


def _check_timesteps(timesteps, T: int) -> list[int]:
    try:
        steps = [int(s) for s in (timesteps.tolist() if isinstance(timesteps, torch.Tensor) else timesteps)]
    except (TypeError, ValueError):
        raise TypeError(f"timesteps must be a sequence of ints, got {timesteps!r}") from None
    if (not steps or steps[0] < 1 or steps[-1] > T
            or any(b <= a for a, b in zip(steps, steps[1:]))):
        raise ValueError(f"timesteps must be a non-empty strictly increasing subsequence of 1..T = "
                         f"1..{T}, got {steps if len(steps) <= 12 else str(steps[:12]) + '...'}")
    return steps


@torch.no_grad()
def ddim_sample(eps_fn: EpsFn, shape: Sequence[int], schedule: Schedule,
                timesteps: Sequence[int] | torch.Tensor | None = None, n_steps: int | None = None,
                eta: float = 0.0, generator: torch.Generator | None = None, device=None,
                return_trajectory: bool = False, progress: bool = False,
                xT: torch.Tensor | None = None, clip_x0: float | None = None):
    """DDIM sampling along tau_1 < ... < tau_m (any strictly increasing subsequence of 1..T):

    x_{tau_m} ~ N(0, I), then `ddim_step` from tau_i to tau_{i-1} for i = m..1, with tau_0 = 0
    (Song et al. 2021, Sec. 4.2; Stratos Sec. 3.3). Give `timesteps`, or `n_steps` for
    `ddim_timesteps`(T, n_steps) (default: min(50, T) steps). Usually tau_m = T.
    Returns x_0, or (x_0, trajectory) with trajectory[i] = x_{tau_i}, i = 0..m, on the CPU.
    `clip_x0`: see `clipped_eps` (1.0 for images in [-1, 1]).
    """
    check_in_range("eta", eta, 0, math.inf, high_open=True)
    if timesteps is not None and n_steps is not None:
        raise ValueError("give timesteps or n_steps, not both")
    if timesteps is None:
        timesteps = ddim_timesteps(schedule.T, min(50, schedule.T) if n_steps is None else n_steps)
    taus = [0] + _check_timesteps(timesteps, schedule.T)
    x = _batch_start(shape, xT, generator, device)
    path = [x.cpu()] if return_trajectory else None
    B = x.shape[0]
    for i in _progress(range(len(taus) - 1, 0, -1), progress, "DDIM"):
        t = torch.full((B,), taus[i], dtype=torch.long, device=x.device)        # (B,)
        t_prev = torch.full((B,), taus[i - 1], dtype=torch.long, device=x.device)
        x = ddim_step(eps_fn(x, t), x, t, t_prev, schedule, eta, generator=generator, clip_x0=clip_x0)
        if return_trajectory:
            path.append(x.cpu())
    return (x, torch.stack(path[::-1])) if return_trajectory else x
