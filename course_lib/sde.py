"""Continuous-time diffusion: the variance-preserving SDE, its reverse, the probability-flow ODE,
and exact log-likelihoods through the ODE.

Time t runs over [0, 1] (t = 0 is the data). With beta(t) = beta_min + t (beta_max - beta_min),

    forward SDE     dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw                 (Song et al. 2021b, Eq. 11)
    reverse SDE     dx = [-1/2 beta(t) x - beta(t) s(x, t)] dt + sqrt(beta(t)) dw-bar, t: 1 -> 0
    PF ODE          dx/dt = -1/2 beta(t) x - 1/2 beta(t) s(x, t)             (Song et al. 2021b, Eq. 13)

with s(x, t) = grad_x log q_t(x) the score. The marginals are q_t(x | x_0) = N(sqrt(alpha-bar(t)) x_0,
(1 - alpha-bar(t)) I), alpha-bar(t) = exp(-int_0^t beta): the discrete DDPM chain with
beta_t = beta(t/T) / T in the limit of many small steps, so beta_min = 0.1 and beta_max = 20 match
the linear schedule of Ho et al. (1e-4 .. 0.02 over T = 1000). A `score_fn(x, t)` takes x (B, ...)
and t (B,) floats in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ._checks import check_in_range, check_positive_int, check_tensor

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a (B,) tensor of x's dtype and device (a number is broadcast to the batch)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) to broadcast against x (B, ...)."""
    return v.reshape(-1, *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class VPSDE:
    """The variance-preserving SDE with a linear beta(t) on t in [0, 1] (Song et al. 2021b, Sec. 3.4)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        check_in_range("beta_min", self.beta_min, 0.0, math.inf, high_open=True)
        check_in_range("beta_max", self.beta_max, self.beta_min, math.inf, high_open=True)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def beta_integral(self, t: torch.Tensor) -> torch.Tensor:
        """B(t) = int_0^t beta(s) ds = beta_min t + 1/2 t^2 (beta_max - beta_min)."""
        return self.beta_min * t + 0.5 * t**2 * (self.beta_max - self.beta_min)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha-bar(t) = exp(-B(t)), the continuous counterpart of prod_s (1 - beta_s)."""
        return torch.exp(-self.beta_integral(t))

    def marginal_mean_std(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q_t(x | x_0) = N(m(t) x_0, s(t)^2 I): m = sqrt(alpha-bar(t)), s = sqrt(1 - alpha-bar(t))."""
        ab = self.alpha_bar(t)
        return ab.sqrt(), (-torch.expm1(-self.beta_integral(t))).sqrt()

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """f(x, t) = -1/2 beta(t) x."""
        return -0.5 * _bcast(self.beta(_time(t, x)), x) * x

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) = sqrt(beta(t))."""
        return self.beta(t).sqrt()

    def discrete_betas(self, T: int) -> torch.Tensor:
        """beta_t = beta((t - 1) / (T - 1)) / T for t = 1..T: the DDPM chain this SDE is the limit
        of (Song et al. 2021b, Appendix B); beta_min = 0.1, beta_max = 20, T = 1000 give exactly
        the linear schedule 1e-4 .. 0.02 of Ho et al. (2020)."""
        check_positive_int("T", T)
        if T < 2:
            raise ValueError(f"T must be at least 2, got {T}")
        t = torch.arange(T, dtype=torch.float64) / (T - 1)
        return self.beta(t) / T


# ------------------------------------------------------------------ reverse SDE and PF ODE
def reverse_drift(sde: VPSDE, score_fn: ScoreFn, x: torch.Tensor, t) -> torch.Tensor:
    """f(x, t) - g(t)^2 s(x, t): the drift of the reverse-time SDE (Anderson 1982)."""
    t = _time(t, x)
    return sde.drift(x, t) - _bcast(sde.beta(t), x) * score_fn(x, t)


def ode_drift(sde: VPSDE, score_fn: ScoreFn, x: torch.Tensor, t) -> torch.Tensor:
    """v(x, t) = f(x, t) - 1/2 g(t)^2 s(x, t): the probability-flow ODE's velocity."""
    t = _time(t, x)
    return sde.drift(x, t) - 0.5 * _bcast(sde.beta(t), x) * score_fn(x, t)


def euler_maruyama_step(x: torch.Tensor, drift: torch.Tensor, diffusion: torch.Tensor, dt: float,
                        z: torch.Tensor) -> torch.Tensor:
    """x + drift dt + diffusion sqrt(|dt|) z: one Euler-Maruyama step (dt < 0 runs backwards).

    `diffusion` is g (B,) or a number; z ~ N(0, I) shaped like x (Kloeden & Platen 1992, Sec. 10.2).
    """
    g = torch.as_tensor(diffusion, dtype=x.dtype, device=x.device)
    g = _bcast(g, x) if g.ndim == 1 else g
    return x + drift * dt + g * math.sqrt(abs(dt)) * z


def _start(shape, xT, generator, device) -> torch.Tensor:
    if xT is not None:
        check_tensor("xT", xT, floating=True)
        return xT.clone()
    return torch.randn(*shape, generator=generator, device=device)


@torch.no_grad()
def reverse_sde_sample(sde: VPSDE, score_fn: ScoreFn, shape, n_steps: int = 1000,
                       t_min: float = 1e-3, generator: torch.Generator | None = None,
                       device=None, xT: torch.Tensor | None = None, denoise: bool = True,
                       return_trajectory: bool = False):
    """Integrate the reverse SDE from x_1 ~ N(0, I) at t = 1 down to t_min with n_steps
    Euler-Maruyama steps of size dt = -(1 - t_min) / n_steps (Song et al. 2021b, Sec. 4.1).

    `denoise`: return Tweedie's E[x_0 | x_{t_min}] = (x + s^2 score) / m instead of x_{t_min}
    (removes the last sliver of noise). Returns x (and the trajectory (n_steps + 1, B, ...) on CPU).
    """
    check_positive_int("n_steps", n_steps)
    check_in_range("t_min", t_min, 0.0, 1.0, high_open=True)
    x = _start(shape, xT, generator, device)
    ts = torch.linspace(1.0, t_min, n_steps + 1, dtype=torch.float64)
    path = [x.cpu()] if return_trajectory else None
    for i in range(n_steps):
        t, dt = float(ts[i]), float(ts[i + 1] - ts[i])
        tb = _time(t, x)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = euler_maruyama_step(x, reverse_drift(sde, score_fn, x, tb), sde.diffusion(tb), dt, z)
        if return_trajectory:
            path.append(x.cpu())
    if denoise:
        tb = _time(t_min, x)
        m, s = (_bcast(v, x) for v in sde.marginal_mean_std(tb))
        x = (x + s**2 * score_fn(x, tb)) / m
    return (x, torch.stack(path)) if return_trajectory else x


def _as_numpy_fun(fun: Callable[[torch.Tensor, float], torch.Tensor], shape, like: torch.Tensor):
    """Wrap fun(x_tensor, t) -> tensor as f(t, y_flat) -> ndarray for scipy's solve_ivp."""
    def f(t, y):
        x = torch.from_numpy(y).to(like).reshape(shape)
        return fun(x, t).detach().reshape(-1).cpu().double().numpy()
    return f


@torch.no_grad()
def ode_sample(sde: VPSDE, score_fn: ScoreFn, shape=None, xT: torch.Tensor | None = None,
               t_min: float = 1e-3, method: str = "RK45", rtol: float = 1e-5, atol: float = 1e-5,
               generator: torch.Generator | None = None, device=None):
    """Solve the probability-flow ODE from t = 1 to t_min with SciPy's `solve_ivp` (adaptive
    RK45 by default; Song et al. 2021b, Sec. 4.3). Deterministic: one x_1 gives one x_0.

    Returns (x_{t_min}, number of score evaluations).
    """
    check_in_range("t_min", t_min, 0.0, 1.0, high_open=True)
    x1 = _start(shape, xT, generator, device)
    f = _as_numpy_fun(lambda x, t: ode_drift(sde, score_fn, x, t), x1.shape, x1)
    sol = solve_ivp(f, (1.0, t_min), x1.reshape(-1).cpu().double().numpy(), method=method,
                    rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"the ODE solver failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).to(x1).reshape(x1.shape), sol.nfev


# ------------------------------------------------------------------ likelihood by the ODE
def divergence(fun: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               hutchinson: int | None = None, generator: torch.Generator | None = None
               ) -> torch.Tensor:
    """div fun(x) = tr(d fun / d x) per example, (B,): exact (one backward pass per dimension)
    or, with `hutchinson` = k, the unbiased estimate mean_j z_j^T (d fun/d x) z_j with
    Rademacher z (Hutchinson 1989; FFJORD, Grathwohl et al. 2019)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fun(x)
        D = x[0].numel()
        if hutchinson is None:
            eye = torch.eye(D, dtype=x.dtype, device=x.device).reshape(D, *x.shape[1:])
            parts = [torch.autograd.grad(y, x, eye[d].expand_as(x), retain_graph=d < D - 1)[0]
                     .reshape(len(x), D)[:, d] for d in range(D)]
            return torch.stack(parts, 1).sum(1).detach()
        check_positive_int("hutchinson", hutchinson)
        total = torch.zeros(len(x), dtype=x.dtype, device=x.device)
        for j in range(hutchinson):
            z = torch.randint(0, 2, x.shape, generator=generator, device=x.device).to(x) * 2 - 1
            jz = torch.autograd.grad(y, x, z, retain_graph=j < hutchinson - 1)[0]
            total += (jz * z).reshape(len(x), -1).sum(1)
        return (total / hutchinson).detach()


def ode_log_likelihood(sde: VPSDE, score_fn: ScoreFn, x0: torch.Tensor, t_min: float = 0.0,
                       prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       rtol: float = 1e-6, atol: float = 1e-6, method: str = "RK45",
                       hutchinson: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x0) per example (B,) in nats under the probability-flow ODE, by the instantaneous
    change of variables (Chen et al. 2018; Song et al. 2021b, Appendix D.2):

        d/dt [x_t, l_t] = [v(x_t, t), div v(x_t, t)],   log p_{t_min}(x0) = log p_1(x_1) + l_1,

    integrated from t_min to 1 with SciPy's `solve_ivp`. `prior_log_prob` is log p_1 (default:
    the standard normal, which q_1 is up to alpha-bar(1) ~ 4e-5). Exact divergence by default
    (fine for 2-D); `hutchinson` = k for images. Returns (log p (B,), x_1 (B, ...)).
    """
    check_tensor("x0", x0, floating=True)
    check_in_range("t_min", t_min, 0.0, 1.0, high_open=True)
    B, shape, D = x0.shape[0], x0.shape, x0[0].numel()
    g = torch.Generator(device=x0.device).manual_seed(0)

    def f(t, y):
        state = torch.from_numpy(y).to(x0)
        x = state[: B * D].reshape(shape)
        v = lambda z: ode_drift(sde, score_fn, z, t)
        with torch.no_grad():
            dx = v(x)
        div = divergence(v, x, hutchinson, g)
        return torch.cat([dx.reshape(-1), div]).cpu().double().numpy()

    y0 = torch.cat([x0.reshape(-1), x0.new_zeros(B)]).cpu().double().numpy()
    sol = solve_ivp(f, (t_min, 1.0), y0, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"the ODE solver failed: {sol.message}")
    end = torch.from_numpy(sol.y[:, -1]).to(x0)
    x1, delta = end[: B * D].reshape(shape), end[B * D:]
    if prior_log_prob is None:
        prior = -0.5 * (x1.reshape(B, -1).pow(2).sum(1) + D * math.log(2 * math.pi))
    else:
        prior = prior_log_prob(x1)
    return prior + delta, x1


def score_fn_from_eps_model(model: Callable, sde: VPSDE, T: int = 1000, y=None) -> ScoreFn:
    """s(x, t) = -eps_theta(x, t T) / sqrt(1 - alpha-bar(t)) for a network trained on the discrete
    chain with T steps (its time input is the step, so continuous t is scaled by T; Luo Eq. 151)."""
    check_positive_int("T", T)

    def score_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = _time(t, x)
        tt = (t * T).to(torch.float32 if x.dtype == torch.float64 else x.dtype)
        xin = x.to(tt.dtype)
        eps = model(xin, tt) if y is None else model(xin, tt, y)
        _, std = sde.marginal_mean_std(t)
        return -eps.to(x.dtype) / _bcast(std, x)

    return score_fn
