"""Conditioning and guidance: steering a diffusion model towards a class y.

By Bayes, grad log p(x_t | y) = grad log p(x_t) + grad log p(y | x_t) (Luo 2022, Eq. 165). Both
guidance methods turn this into a modified noise prediction that the DDPM and DDIM samplers use
unchanged, via eps = -sqrt(1 - alpha-bar_t) * score (Luo Eq. 151):

- classifier guidance: a noise-aware classifier p_phi(y | x_t, t) supplies the second term,
  scaled by gamma (Luo Eq. 166; Dhariwal & Nichol 2021; Strumke & Langseth Sec. 3.2);
- classifier-free guidance: one network learns eps(x_t, t, y) and, with the label dropped to the
  null label -1, eps(x_t, t); their mix with scale gamma needs no classifier (Luo Eq. 169; Ho &
  Salimans 2022; Strumke & Langseth Sec. 3.3).

In both, gamma = 0 ignores y, gamma = 1 samples p(x | y), gamma > 1 trades diversity for fidelity.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_in_range, check_tensor
from .diffusion import EpsFn, _at, eps_fn_from_model, q_sample
from .nets import NULL_LABEL
from .schedules import Schedule


def _labels(y, batch: int, device) -> torch.Tensor:
    """y as a (batch,) long tensor (an int is repeated)."""
    y = torch.as_tensor(y, dtype=torch.long, device=device)
    return y.expand(batch) if y.ndim == 0 else y


def drop_labels(y: torch.Tensor, p_uncond: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Condition dropout: each label replaced by the null label -1 with probability p_uncond,
    so that one network learns both eps(x_t, t, y) and eps(x_t, t) (Ho & Salimans 2022, Alg. 1)."""
    check_tensor("y", y, ndim=1)
    check_in_range("p_uncond", p_uncond, 0.0, 1.0)
    drop = torch.rand(y.shape, generator=generator).to(y.device) < p_uncond
    return torch.where(drop, torch.full_like(y, NULL_LABEL), y)


def noisy_classifier_loss(classifier: nn.Module, x0: torch.Tensor, y: torch.Tensor,
                          schedule: Schedule, generator: torch.Generator | None = None
                          ) -> torch.Tensor:
    """Cross-entropy of p_phi(y | x_t, t) on x_t = q_sample(x_0, t), t ~ U{1..T}: trains the
    noise-aware classifier of classifier guidance (Dhariwal & Nichol 2021, Sec. 4)."""
    t = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator).to(x0.device)
    xt = q_sample(x0, t, schedule, generator=generator)
    return F.cross_entropy(classifier(xt, t.to(x0.dtype)), y)


def classifier_log_prob_grad(classifier: nn.Module, xt: torch.Tensor, t: torch.Tensor,
                             y) -> torch.Tensor:
    """grad_{x_t} log p_phi(y | x_t, t), shaped like x_t, by autograd (each example's log-prob
    depends only on its own x_t, so the gradient of the sum is the per-example gradient)."""
    y = _labels(y, xt.shape[0], xt.device)
    with torch.enable_grad():
        x = xt.detach().requires_grad_(True)
        log_p = F.log_softmax(classifier(x, t.to(x.dtype)), dim=-1)      # (B, classes)
        picked = log_p.gather(1, y[:, None]).sum()
        return torch.autograd.grad(picked, x)[0]


def classifier_guided_eps_fn(eps_fn: EpsFn, classifier: nn.Module, y, gamma: float,
                             schedule: Schedule) -> EpsFn:
    """eps~(x_t, t) = eps(x_t, t) - gamma sqrt(1 - alpha-bar_t) grad log p_phi(y | x_t, t).

    The score form grad log p(x_t) + gamma grad log p(y | x_t) (Luo Eq. 166) rewritten with
    eps = -sqrt(1 - alpha-bar_t) score (Dhariwal & Nichol 2021, Algorithm 2)."""
    check_in_range("gamma", gamma, 0.0, float("inf"), high_open=True)

    def guided(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(xt, t)
        if gamma == 0:
            return eps
        grad = classifier_log_prob_grad(classifier, xt, t, y)
        return eps - gamma * (1 - _at(schedule.alpha_bars, t, xt)).sqrt() * grad

    return guided


def cfg_combine(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma eps(x_t, t, y) + (1 - gamma) eps(x_t, t) = eps_u + gamma (eps_c - eps_u)
    (Luo Eq. 169 in eps units; Ho & Salimans 2022 write w = gamma - 1)."""
    return eps_uncond + gamma * (eps_cond - eps_uncond)


def cfg_eps_fn(model: nn.Module | Callable, schedule: Schedule, y, gamma: float,
               parameterisation: str = "eps") -> EpsFn:
    """Classifier-free guidance for a conditional `model` trained with condition dropout: both
    predictions come from the same network, with y and with the null label -1, in one batch."""
    check_in_range("gamma", gamma, 0.0, float("inf"), high_open=True)

    def guided(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B = xt.shape[0]
        labels = _labels(y, B, xt.device)
        both = torch.cat([labels, torch.full_like(labels, NULL_LABEL)])
        eps = eps_fn_from_model(model, schedule, parameterisation, y=both)(
            torch.cat([xt, xt]), torch.cat([t, t]))
        return cfg_combine(eps[:B], eps[B:], gamma)

    return guided
