"""Score-based modelling: Langevin dynamics, score matching, noise-conditional score networks.

A score function s(x) = grad_x log p(x) is all Langevin dynamics needs to sample p (Luo 2022,
Eq. 158). Score matching fits s_theta to data without knowing p (Hyvarinen 2005); denoising score
matching fits the score of the data blurred by Gaussian noise of scale sigma (Vincent 2011), and a
noise-conditional network s_theta(x, sigma) does so for a whole geometric ladder of sigmas, which
annealed Langevin descends (Song & Ermon 2019; Luo Eq. 160-161). One code path for (B, D) points
and (B, C, H, W) images.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ._checks import check_in_range, check_positive_int, check_tensor
from .sde import divergence


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _sum_per_example(v: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape[0], -1).sum(1)


# ------------------------------------------------------------------------- Langevin dynamics
def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float,
                  z: torch.Tensor | None = None) -> torch.Tensor:
    """x + c s(x) + sqrt(2c) z with c = `step_size` (Luo 2022, Eq. 158; Roberts & Tweedie 1996).

    z ~ N(0, I) shaped like x; z = None drops the noise, leaving gradient ascent on log p.
    """
    check_in_range("step_size", step_size, 0.0, math.inf, low_open=True, high_open=True)
    out = x + step_size * score
    return out if z is None else out + math.sqrt(2 * step_size) * z


@torch.no_grad()
def langevin(score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, step_size: float,
             n_steps: int, noise: bool = True, generator: torch.Generator | None = None,
             return_trajectory: bool = False):
    """Run `n_steps` Langevin steps from x (B, ...). As c -> 0 and n_steps -> inf the samples
    follow p; with noise=False they climb to the modes of p instead.

    Returns x, or (x, trajectory (n_steps + 1, B, ...) on the CPU)."""
    check_tensor("x", x, floating=True)
    check_positive_int("n_steps", n_steps)
    path = [x.cpu()] if return_trajectory else None
    for _ in range(n_steps):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) if noise else None
        x = langevin_step(x, score_fn(x), step_size, z)
        if return_trajectory:
            path.append(x.cpu())
    return (x, torch.stack(path)) if return_trajectory else x


def geometric_sigmas(sigma_max: float, sigma_min: float, L: int) -> torch.Tensor:
    """sigma_1 > ... > sigma_L, a geometric sequence from sigma_max to sigma_min (float64, (L,))
    (Song & Ermon 2019, Sec. 4.1)."""
    check_in_range("sigma_min", sigma_min, 0.0, math.inf, low_open=True, high_open=True)
    check_in_range("sigma_max", sigma_max, sigma_min, math.inf, high_open=True)
    check_positive_int("L", L)
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), L, dtype=torch.float64)


@torch.no_grad()
def annealed_langevin(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      x: torch.Tensor, sigmas: torch.Tensor, steps_per_sigma: int,
                      eps: float = 2e-5, noise: bool = True,
                      generator: torch.Generator | None = None, return_trajectory: bool = False):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; Luo Eq. 161).

    For each sigma_i (largest first), `steps_per_sigma` Langevin steps on s(x, sigma_i) with step
    size c_i = eps * sigma_i^2 / sigma_L^2, so that the signal-to-noise ratio of a step is the same
    at every level. score_fn(x, sigma) takes sigma as a (B,) tensor.
    Returns x, or (x, trajectory (L * steps_per_sigma + 1, B, ...) on the CPU).
    """
    check_tensor("x", x, floating=True)
    check_tensor("sigmas", sigmas, ndim=1, floating=True)
    check_positive_int("steps_per_sigma", steps_per_sigma)
    if (sigmas.diff() >= 0).any():
        raise ValueError("sigmas must be strictly decreasing (largest noise first)")
    path = [x.cpu()] if return_trajectory else None
    for sigma in sigmas.tolist():
        c = eps * sigma**2 / float(sigmas[-1]) ** 2
        s = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        for _ in range(steps_per_sigma):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device) if noise else None
            x = langevin_step(x, score_fn(x, s), c, z)
            if return_trajectory:
                path.append(x.cpu())
    return (x, torch.stack(path)) if return_trajectory else x


# ------------------------------------------------------------------------- score matching
def dsm_loss_per_example(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         x: torch.Tensor, sigma, z: torch.Tensor | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Denoising score matching, sigma^2-weighted, per example (B,) (Vincent 2011; Song & Ermon
    2019, Eq. 5-6):

        x~ = x + sigma z,   l = 1/2 sigma^2 || s(x~, sigma) - (-(x~ - x) / sigma^2) ||^2
                              = 1/2 || sigma s(x~, sigma) + z ||^2.

    The target -(x~ - x) / sigma^2 is the score of q(x~ | x); its minimiser over s is the score of
    the blurred data, grad log q_sigma(x~). sigma: a number or (B,) tensor (one level per example).
    """
    check_tensor("x", x, floating=True)
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
    if tuple(sigma.shape) != (x.shape[0],):
        raise ValueError(f"sigma must be a number or a ({x.shape[0]},) tensor, got shape "
                         f"{tuple(sigma.shape)}")
    if (sigma <= 0).any():
        raise ValueError("sigma must be positive")
    if z is None:
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    s = _bcast(sigma, x)
    x_noisy = x + s * z
    return 0.5 * _sum_per_example((s * score_fn(x_noisy, sigma) + z) ** 2)


def ncsn_loss(score_fn, x: torch.Tensor, sigmas: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The noise-conditional score network loss: `dsm_loss_per_example` with one sigma drawn
    uniformly from `sigmas` per example, averaged (Song & Ermon 2019, Eq. 6 with lambda = sigma^2)."""
    check_tensor("sigmas", sigmas, ndim=1, floating=True)
    i = torch.randint(len(sigmas), (x.shape[0],), generator=generator).to(sigmas.device)
    return dsm_loss_per_example(score_fn, x, sigmas[i].to(x), generator=generator).mean()


def implicit_score_matching_loss(score_fn: Callable[[torch.Tensor], torch.Tensor],
                                 x: torch.Tensor) -> torch.Tensor:
    """Hyvarinen's score matching objective per example (B,):

        J(x) = tr(grad_x s(x)) + 1/2 ||s(x)||^2,

    equal to the Fisher divergence 1/2 E||s - grad log p||^2 up to a constant that does not
    depend on s (Hyvarinen 2005, Theorem 1; Luo Eq. 157). The trace is exact (one backward pass
    per dimension), which is cheap for 2-D toys only; keeps the graph so it can be trained."""
    check_tensor("x", x, floating=True)
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    D = x[0].numel()
    flat_s = s.reshape(len(x), D)
    trace = x.new_zeros(len(x))
    for d in range(D):
        g = torch.autograd.grad(flat_s[:, d].sum(), x, create_graph=True)[0]
        trace = trace + g.reshape(len(x), D)[:, d]
    return trace + 0.5 * flat_s.pow(2).sum(1)


def fisher_divergence(score_fn: Callable[[torch.Tensor], torch.Tensor],
                      true_score: Callable[[torch.Tensor], torch.Tensor],
                      x: torch.Tensor) -> torch.Tensor:
    """1/2 ||s(x) - grad log p(x)||^2 per example (B,), at samples x ~ p (Luo Eq. 157)."""
    return 0.5 * _sum_per_example((score_fn(x) - true_score(x)) ** 2)


# ------------------------------------------------------------------------- NCSN
class NoiseConditionalScore(nn.Module):
    """s_theta(x, sigma) = net(x, tau(sigma)) / sigma for a time-conditioned `net` (e.g. nets.MLP).

    tau(sigma) = 250 log(sigma) feeds the noise level to the net's sinusoidal embedding; the
    division by sigma makes the output's scale match the true score's, about 1 / sigma (Song &
    Ermon 2020, "Improved techniques", Technique 3).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        return self.net(x, 250.0 * sigma.log()) / _bcast(sigma, x)
