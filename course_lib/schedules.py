"""Noise schedules of a discrete-time diffusion model (notebook 04).

A schedule is three 1-D tensors of length T + 1, indexed by the step t = 0..T exactly as in
the texts (Luo 2022, Eq. 31-33 and 59-70):

    betas[t]       beta_t, the variance of q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    alphas[t]      alpha_t = 1 - beta_t
    alpha_bars[t]  alpha-bar_t = prod_{s <= t} alpha_s, so q(x_t | x_0) = N(sqrt(alpha-bar_t) x_0,
                   (1 - alpha-bar_t) I)  (Luo Eq. 70)

with betas[0] = 0 and alpha_bars[0] = 1 (index 0 is the clean data), so t runs 1..T with no
off-by-one. `alpha_bars[t]` is what diffusers calls `alphas_cumprod[t - 1]` (its arrays start at
step 1), and what Song et al. (2021, DDIM) and Stratos write alpha_t.

Dtype: every constructor computes in float64 and the schedule *stores* float64 (on the CPU unless
moved with `to`). The diffusion functions cast the coefficients they look up to the dtype and
device of the data, so float32 models pay nothing and float64 checks are exact.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ._checks import check_choice, check_in_range, check_positive_int, check_tensor

SCHEDULES = ("linear", "cosine")


@dataclass(frozen=True, eq=False)
class Schedule:
    """beta_t, alpha_t and alpha-bar_t for t = 0..T (each a (T+1,) tensor; entry 0 is the data).

    `snr(t) = alpha-bar_t / (1 - alpha-bar_t)` (Luo 2022, Eq. 109) and `log_snr(t)` accept an int
    or an integer tensor of steps in 0..T (SNR(0) = inf).
    """

    betas: torch.Tensor = field(repr=False)       # (T+1,)  betas[0] = 0
    alphas: torch.Tensor = field(repr=False)      # (T+1,)  1 - betas
    alpha_bars: torch.Tensor = field(repr=False)  # (T+1,)  alpha_bars[0] = 1

    def __post_init__(self) -> None:
        for name in ("betas", "alphas", "alpha_bars"):
            check_tensor(name, getattr(self, name), ndim=1, floating=True)
        n = self.betas.shape[0]
        if n < 2 or self.alphas.shape[0] != n or self.alpha_bars.shape[0] != n:
            raise ValueError(f"betas, alphas and alpha_bars must share one length T + 1 >= 2, got "
                             f"{n}, {self.alphas.shape[0]} and {self.alpha_bars.shape[0]}")
        if float(self.betas[0]) != 0.0 or float(self.alpha_bars[0]) != 1.0:
            raise ValueError("betas[0] must be 0 and alpha_bars[0] must be 1 (index 0 is the data), "
                             f"got {float(self.betas[0])} and {float(self.alpha_bars[0])}")
        _check_betas(self.betas[1:])

    @property
    def T(self) -> int:
        """The number of diffusion steps."""
        return self.betas.shape[0] - 1

    def __repr__(self) -> str:
        return (f"Schedule(T={self.T}, beta_1={float(self.betas[1]):.3g}, "
                f"beta_T={float(self.betas[-1]):.3g}, alpha_bar_T={float(self.alpha_bars[-1]):.3g})")

    def _steps(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, device=self.alpha_bars.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"t must be an int or an integer tensor, got dtype {t.dtype}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) > self.T):
            raise ValueError(f"t must lie in 0..T = 0..{self.T}, got values in "
                             f"{int(t.min())}..{int(t.max())}")
        return t

    def snr(self, t) -> torch.Tensor:
        """SNR(t) = alpha-bar_t / (1 - alpha-bar_t)  (Luo 2022, Eq. 109); inf at t = 0."""
        alpha_bar_t = self.alpha_bars[self._steps(t)]
        return alpha_bar_t / (1 - alpha_bar_t)

    def log_snr(self, t) -> torch.Tensor:
        """lambda_t = log SNR(t) = log alpha-bar_t - log(1 - alpha-bar_t); inf at t = 0."""
        alpha_bar_t = self.alpha_bars[self._steps(t)]
        return alpha_bar_t.log() - torch.log1p(-alpha_bar_t)

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Schedule":
        """A copy on `device` (and `dtype`); float64 becomes float32 on Apple MPS, which lacks it."""
        if dtype is None and torch.device(device or "cpu").type == "mps":
            dtype = torch.float32
        return Schedule(*(a.to(device=device, dtype=dtype)
                          for a in (self.betas, self.alphas, self.alpha_bars)))


# ---------------------------------------------------------------------------- constructors

def _check_betas(betas: torch.Tensor, name: str = "betas") -> None:
    """Every beta_t, t = 1..T, must lie in the open interval (0, 1)."""
    if not torch.isfinite(betas).all() or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError(f"{name} must lie in (0, 1) for t = 1..T, got values in "
                         f"[{float(betas.min()):.3g}, {float(betas.max()):.3g}]")


def _from_betas(betas_1_to_T: torch.Tensor, name: str = "betas") -> Schedule:
    """Prepend beta_0 = 0; alpha_t = 1 - beta_t; alpha-bar_t = cumprod (Luo 2022, Eq. 61-70)."""
    _check_betas(betas_1_to_T, name)
    betas = torch.cat([betas_1_to_T.new_zeros(1), betas_1_to_T])   # (T+1,)
    alphas = 1 - betas                                             # (T+1,)
    return Schedule(betas, alphas, torch.cumprod(alphas, 0))


def schedule_from_betas(betas_1_to_T: Sequence[float] | np.ndarray | torch.Tensor) -> Schedule:
    """The schedule of given beta_1..beta_T (a length-T sequence, each in (0, 1))."""
    b = torch.as_tensor(np.asarray(betas_1_to_T, dtype=np.float64)
                        if not isinstance(betas_1_to_T, torch.Tensor) else betas_1_to_T,
                        dtype=torch.float64).cpu()
    if b.ndim != 1 or b.shape[0] < 1:
        raise ValueError(f"betas_1_to_T must be a 1-D sequence of T >= 1 values, got shape {tuple(b.shape)}")
    return _from_betas(b, "betas_1_to_T")



def schedule_from_alpha_bars(alpha_bars: torch.Tensor) -> Schedule:
    """The schedule whose alpha-bar_t are `alpha_bars` (T+1,), alpha_bars[0] = 1:
    beta_t = 1 - alpha-bar_t / alpha-bar_{t-1}."""
    check_tensor("alpha_bars", alpha_bars, ndim=1, floating=True)
    ab = alpha_bars.to(torch.float64)
    if ab.shape[0] < 2 or float(ab[0]) != 1.0:
        raise ValueError(f"alpha_bars must have length T + 1 >= 2 with alpha_bars[0] = 1, got "
                         f"length {ab.shape[0]} starting {float(ab[0]) if ab.numel() else None}")
    return schedule_from_betas(1 - ab[1:] / ab[:-1])

def linear_schedule(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Schedule:
    """beta_t linear from beta_1 to beta_T  (Ho et al. 2020, Sec. 4).

    The defaults are DDPM's for T = 1000. For other T, Nichol & Dhariwal (2021) scale both ends
    by 1000 / T, so that alpha-bar_T stays near 0 (with T = 200 and the defaults, alpha-bar_T is
    about 0.13, far from pure noise).
    """
    check_positive_int("T", T)
    check_in_range("beta_1", beta_1, 0, 1, low_open=True, high_open=True)
    check_in_range("beta_T", beta_T, 0, 1, low_open=True, high_open=True)
    return _from_betas(torch.linspace(beta_1, beta_T, T, dtype=torch.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """The cosine schedule of Nichol & Dhariwal (2021, Eq. 17).

    alpha-bar(t) = f(t) / f(0) with f(t) = cos^2( (t/T + s) / (1 + s) * pi/2 ), then
    beta_t = min(1 - alpha-bar(t) / alpha-bar(t-1), max_beta), and alpha-bar_t is recomputed as
    the cumulative product of the clipped alpha_t = 1 - beta_t (so the last beta is max_beta:
    f(T) = 0).
    """
    check_positive_int("T", T)
    check_in_range("s", s, 0, math.inf, high_open=True)
    check_in_range("max_beta", max_beta, 0, 1, low_open=True, high_open=True)
    t = torch.arange(T + 1, dtype=torch.float64)                   # (T+1,)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2        # (T+1,)
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)  # (T,)
    return _from_betas(betas)


def schedule_from_log_snr(log_snr: Callable[[torch.Tensor], torch.Tensor], T: int) -> Schedule:
    """alpha-bar_t = sigmoid(lambda(t / T)) for t = 1..T, with alpha-bar_0 = 1 (the data).

    `log_snr` maps u in [0, 1] (a float64 tensor) to lambda(u) = log SNR, strictly decreasing so
    that every beta_t = 1 - alpha-bar_t / alpha-bar_{t-1} lies in (0, 1). Luo (2022, Eq. 111-113)
    with lambda = -omega_eta; Kingma et al. (2021, VDM) for learned schedules.
    """
    check_positive_int("T", T)
    if not callable(log_snr):
        raise TypeError(f"log_snr must be a callable u -> lambda(u), got {type(log_snr).__name__}")
    u = torch.arange(1, T + 1, dtype=torch.float64) / T            # (T,)
    lam = torch.as_tensor(log_snr(u), dtype=torch.float64).cpu()
    if lam.shape != u.shape:
        raise ValueError(f"log_snr must map a ({T},) tensor of u to ({T},) values, got shape "
                         f"{tuple(lam.shape)}")
    alpha_bars = torch.cat([torch.ones(1, dtype=torch.float64), torch.sigmoid(lam)])  # (T+1,)
    betas = 1 - alpha_bars[1:] / alpha_bars[:-1]
    if not torch.isfinite(lam).all() or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError("log_snr must be finite and strictly decreasing in u (so that every beta_t "
                         "is in (0, 1))")
    betas = torch.cat([betas.new_zeros(1), betas])
    return Schedule(betas, 1 - betas, alpha_bars)


def make_schedule(name: str = "linear", T: int = 1000, **kwargs) -> Schedule:
    """The named schedule: ``"linear"`` (`linear_schedule`) or ``"cosine"`` (`cosine_schedule`)."""
    check_choice("name", name, SCHEDULES)
    return (linear_schedule if name == "linear" else cosine_schedule)(T, **kwargs)


# ---------------------------------------------------------------------------- prior matching

def prior_kl(schedule: Schedule, x0: torch.Tensor) -> torch.Tensor:
    """KL(q(x_T | x_0) || N(0, I)) per example, in nats: the prior-matching term.

    With q(x_T | x_0) = N(sqrt(a) x_0, (1 - a) I), a = alpha-bar_T (Luo 2022, Eq. 70), the
    Gaussian KL (Luo Eq. 86) summed over the D entries of each example is

        1/2 sum_i [ (1 - a) + a x_{0,i}^2 - 1 - log(1 - a) ] = 1/2 sum_i [ a x_{0,i}^2 - a - log(1 - a) ].

    The prior-matching term of the ELBO (Luo Eq. 58). Shapes: x_0 (B, ...) -> (B,).
    """
    check_tensor("x0", x0, floating=True)
    if x0.ndim < 1:
        raise ValueError("x0 must have a batch dimension, got a 0-d tensor")
    a = float(schedule.alpha_bars[-1])
    per_entry = 0.5 * (a * x0.pow(2) - a - math.log1p(-a))         # (B, ...)
    return per_entry.reshape(x0.shape[0], -1).sum(1)               # (B,)
