"""Continuous-time objectives: log-SNR schedules, the continuous ELBO, a learned monotone
schedule, and weighted diffusion losses.

A schedule is a decreasing log-signal-to-noise ratio lambda(t) = log SNR(t) on t in [0, 1], with
alpha-bar(t) = sigmoid(lambda(t)) and 1 - alpha-bar(t) = sigmoid(-lambda(t)) (Luo 2022, Eq. 111-114,
writes SNR(t) = exp(-omega(t)) with omega increasing; Kingma et al. 2021 write gamma = -lambda).
As T -> infinity the diffusion ELBO's denoising terms become

    L_inf(x) = 1/2 E_{t ~ U(0,1), eps} [ -lambda'(t) ||eps - eps_hat(x_t, t)||^2 ]       (Kingma et al. 2021, Eq. 17)

and every common objective is this with a weight w(lambda_t) inside the expectation (Kingma & Gao
2023, Eq. 5): w = 1 is the ELBO; the "simple" loss of Ho et al. is w = 1 / (-lambda'(t)).
Networks take the time as t * `time_scale` (1000 by default), like the discrete-time models.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_in_range, check_positive_int, check_tensor

LogSNR = Callable[[torch.Tensor], torch.Tensor]
WEIGHTINGS = ("elbo", "simple", "sigmoid")


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def linear_log_snr_vp(beta_min: float = 0.1, beta_max: float = 20.0) -> LogSNR:
    """lambda(t) of the VP SDE with linear beta(t) (`sde.VPSDE`): alpha-bar = exp(-B(t)), so
    lambda = log(alpha-bar / (1 - alpha-bar)) = -log(expm1(B(t)))."""
    def log_snr(t: torch.Tensor) -> torch.Tensor:
        B = beta_min * t + 0.5 * t**2 * (beta_max - beta_min)
        return -torch.log(torch.expm1(B))
    return log_snr


def cosine_log_snr(lambda_min: float = -15.0, lambda_max: float = 15.0) -> LogSNR:
    """lambda(t) = -2 log tan(pi t / 2) (the cosine schedule of Nichol & Dhariwal 2021 without
    its offset), with t mapped so that lambda runs from lambda_max at t=0 to lambda_min at t=1."""
    t0 = math.atan(math.exp(-0.5 * lambda_max)) * 2 / math.pi
    t1 = math.atan(math.exp(-0.5 * lambda_min)) * 2 / math.pi

    def log_snr(t: torch.Tensor) -> torch.Tensor:
        return -2 * torch.log(torch.tan(math.pi * (t0 + t * (t1 - t0)) / 2))
    return log_snr


def alpha_sigma(log_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(alpha-bar), sqrt(1 - alpha-bar)) = (sqrt(sigmoid(lambda)), sqrt(sigmoid(-lambda)))."""
    return torch.sigmoid(log_snr).sqrt(), torch.sigmoid(-log_snr).sqrt()


def log_snr_and_slope(log_snr_fn: LogSNR, t: torch.Tensor, create_graph: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda(t) and d lambda / dt at each t (B,), the slope by autograd (differentiable in the
    schedule's parameters when `create_graph`, so a learned schedule can be trained)."""
    with torch.enable_grad():
        t = t.detach().requires_grad_(True)
        lam = log_snr_fn(t)
        (slope,) = torch.autograd.grad(lam.sum(), t, create_graph=create_graph)
    return (lam, slope) if create_graph else (lam.detach(), slope)


class MonotoneLogSNR(nn.Module):
    """A learned schedule: lambda(t) = lambda_max - (lambda_max - lambda_min) * phi(t), where

        phi~(t) = l1(t) + l3(sigmoid(l2(l1(t)))),  phi(t) = (phi~(t) - phi~(0)) / (phi~(1) - phi~(0)),

    with every weight made positive (softplus), so phi~ increases in t and phi runs from 0 to 1:
    lambda decreases from lambda_max to lambda_min whatever the parameters (the monotone network of
    Kingma et al. 2021, Appendix H; Luo 2022, Eq. 111-114). The endpoints are fixed here; only the
    shape in between is learned.
    """

    def __init__(self, lambda_min: float = -10.0, lambda_max: float = 10.0, hidden: int = 64):
        super().__init__()
        check_positive_int("hidden", hidden)
        check_in_range("lambda_max", lambda_max, lambda_min, math.inf, low_open=True, high_open=True)
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.w1, self.b1 = nn.Parameter(torch.zeros(())), nn.Parameter(torch.zeros(()))
        self.w2 = nn.Parameter(torch.randn(hidden))
        self.b2 = nn.Parameter(torch.randn(hidden))
        self.w3 = nn.Parameter(torch.randn(hidden) - 2.0)

    def _phi_tilde(self, t: torch.Tensor) -> torch.Tensor:
        l1 = F.softplus(self.w1) * t + self.b1                          # (B,)
        h = torch.sigmoid(F.softplus(self.w2) * l1[:, None] + self.b2)  # (B, H)
        return l1 + h @ F.softplus(self.w3)                             # (B,)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        check_tensor("t", t, ndim=1, floating=True)
        ends = self._phi_tilde(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        phi = (self._phi_tilde(t) - ends[0]) / (ends[1] - ends[0])
        return self.lambda_max - (self.lambda_max - self.lambda_min) * phi


def weight(name: str, log_snr: torch.Tensor, slope: torch.Tensor, bias: float = 0.0) -> torch.Tensor:
    """w(lambda_t) of a weighted objective (Kingma & Gao 2023, Sec. 2 and Table 1):

    - "elbo":    w = 1 (the continuous ELBO, maximum likelihood);
    - "simple":  w = 1 / (-lambda'(t)), so that w * (-lambda') = 1: Ho et al.'s L_simple, eps-MSE
                 with t uniform;
    - "sigmoid": w = sigmoid(bias - lambda), which down-weights the nearly clean (high-SNR) end.
    """
    check_choice("weighting", name, WEIGHTINGS)
    if name == "elbo":
        return torch.ones_like(log_snr)
    if name == "simple":
        return 1.0 / (-slope)
    return torch.sigmoid(bias - log_snr)


def weighted_loss_per_example(eps_model: Callable, x0: torch.Tensor, log_snr_fn: LogSNR,
                              weighting: str = "elbo", bias: float = 0.0,
                              t: torch.Tensor | None = None, eps: torch.Tensor | None = None,
                              time_scale: float = 1000.0, antithetic: bool = True,
                              generator: torch.Generator | None = None,
                              learn_schedule: bool = False) -> torch.Tensor:
    """1/2 w(lambda_t) (-lambda'(t)) ||eps - eps_hat(x_t, t)||^2 per example (B,) (Kingma & Gao
    2023, Eq. 5), with x_t = sqrt(sigmoid(lambda)) x_0 + sqrt(sigmoid(-lambda)) eps.

    t ~ U(0, 1) per example unless given; `antithetic` uses the low-discrepancy draws
    t_i = (u + i / B) mod 1 of Kingma et al. (2021, Appendix I.1), which lowers the variance.
    With weighting "elbo" its mean is L_inf, the diffusion part of the negative ELBO in nats.
    `learn_schedule` keeps the graph through lambda and lambda' so the schedule gets gradients.
    """
    check_tensor("x0", x0, floating=True)
    B = x0.shape[0]
    if t is None:
        u = torch.rand((), generator=generator).item()
        t = ((u + torch.arange(B) / B) % 1.0 if antithetic
             else torch.rand(B, generator=generator)).to(x0)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    lam, slope = log_snr_and_slope(log_snr_fn, t, create_graph=learn_schedule)
    if not learn_schedule:
        lam, slope = lam.detach(), slope.detach()
    a, s = alpha_sigma(lam)
    xt = _bcast(a, x0) * x0 + _bcast(s, x0) * eps
    err = (eps - eps_model(xt, t * time_scale)).reshape(B, -1).pow(2).sum(1)
    return 0.5 * weight(weighting, lam, slope, bias) * (-slope) * err
