"""Sample-quality metrics for 2-D generative models.

Each metric compares generated samples `x` (N, D) either with fresh data `y` (M, D)
(sliced Wasserstein, MMD) or with the true Gaussian mixture behind the data (mode coverage,
exact log-likelihood). The mixture is duck-typed: it needs `weights` (K,), `means` (K, D),
`covs` (K, D, D) and `log_prob(x) -> (N,)`, as `course_lib.data.mixture.GaussianMixture` has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ._checks import check_in_range, check_positive_int, check_same_device, check_tensor

MEDIAN_SUBSAMPLE = 1000  # points used to estimate the median pairwise distance
CHUNK = 1024             # rows of a kernel matrix computed at a time


def _check_pair(x, y) -> None:
    check_tensor("x", x, ndim=2, floating=True)
    check_tensor("y", y, ndim=2, last_dim=x.shape[1], floating=True)
    check_same_device(x=x, y=y)
    for name, z in (("x", x), ("y", y)):
        if len(z) == 0:
            raise ValueError(f"{name} must hold at least one sample, got shape {tuple(z.shape)}")


def _check_samples(x, mixture) -> None:
    check_tensor("x", x, ndim=2, last_dim=mixture.means.shape[-1], floating=True)
    if len(x) == 0:
        raise ValueError(f"x must hold at least one sample, got shape {tuple(x.shape)}")


# ---------------------------------------------------------------- sliced Wasserstein


def _wasserstein_1d_pp(u: torch.Tensor, v: torch.Tensor, p: float) -> torch.Tensor:
    """W_p^p = int_0^1 |F_u^-1(s) - F_v^-1(s)|^p ds between 1-D empirical distributions, per column.

    The quantile functions are step functions with jumps at i/N and j/M; on the common grid
    of all those jumps both are constant, so the integral is an exact weighted sum.
    """
    N, M = u.shape[0], v.shape[0]
    u, v = u.sort(dim=0).values, v.sort(dim=0).values             # (N, L), (M, L)
    jumps_u = torch.arange(1, N + 1, device=u.device) * M         # (N,) i/N, in units of 1/(NM)
    jumps_v = torch.arange(1, M + 1, device=u.device) * N         # (M,) j/M, same units
    s = torch.cat([jumps_u, jumps_v]).sort().values               # (N+M,) common grid
    ds = torch.diff(s, prepend=s.new_zeros(1)).to(u.dtype) / (N * M)  # (N+M,) interval lengths
    i = (s + M - 1) // M - 1                                      # (N+M,) ceil(s N) - 1 into u
    j = (s + N - 1) // N - 1                                      # (N+M,) ceil(s M) - 1 into v
    return (ds[:, None] * (u[i] - v[j]).abs().pow(p)).sum(dim=0)  # (L,)


@torch.no_grad()
def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256, p: float = 2,
                       generator: torch.Generator | None = None) -> float:
    """Sliced p-Wasserstein distance SW_p(x, y) = (E_theta[W_p^p(theta.x, theta.y)])^(1/p).

    theta runs over `n_projections` random unit directions in R^D; each W_p between the projected
    1-D samples is exact (quantile functions compared on the merged grid of jumps i/N, j/M),
    so N and M may differ. Without a `generator` the directions come from seed 0, so repeated
    calls agree. Rabin et al. (2011), "Wasserstein barycenter and its application to texture
    mixing", Sec. 3; Bonneel et al. (2015), "Sliced and Radon Wasserstein barycenters of measures".
    """
    _check_pair(x, y)
    check_positive_int("n_projections", n_projections)
    check_in_range("p", p, 1, math.inf, high_open=True)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    theta = torch.randn(x.shape[1], n_projections, generator=generator,
                        device=generator.device)                   # (D, L)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x)       # unit columns
    w_pp = _wasserstein_1d_pp(x @ theta, y @ theta, p)            # (L,)
    return w_pp.mean().item() ** (1 / p)


# ---------------------------------------------------------------- MMD


def _median_distance(z: torch.Tensor) -> torch.Tensor:
    """Median of |z_i - z_j|, i < j, over at most MEDIAN_SUBSAMPLE evenly spaced points of z.

    The lower median for an even count (torch.median); floored at 1e-12 so that a kernel
    width is never zero.
    """
    idx = torch.linspace(0, len(z) - 1, min(len(z), MEDIAN_SUBSAMPLE), device=z.device).long()
    d = torch.cdist(z[idx], z[idx])                               # (S, S)
    upper = torch.triu_indices(len(idx), len(idx), 1, device=z.device).unbind()
    return d[upper].median().clamp_min(1e-12)


def _rbf(a: torch.Tensor, b: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """k(a_i, b_j) = sum_sigma exp(-|a_i - b_j|^2 / (2 sigma^2)) as a (C, M) matrix."""
    d2 = torch.cdist(a, b).square_()                              # (C, M)
    k = torch.zeros_like(d2)
    for sigma in sigmas.tolist():
        k += d2.mul(-0.5 / sigma**2).exp_()                       # in place: one temporary
    return k


def _kernel_sum(a: torch.Tensor, b: torch.Tensor | None, sigmas: torch.Tensor) -> float:
    """sum_{i,j} k(a_i, b_j), in row chunks of a. With b None (b = a) only blocks on or right of
    the diagonal are computed; those right of it count twice, as k(a_i, a_j) = k(a_j, a_i)."""
    total = 0.0
    for start in range(0, len(a), CHUNK):
        a_c = a[start:start + CHUNK]                              # (C, D)
        if b is None:
            k = _rbf(a_c, a[start:], sigmas)                      # (C, N - start)
            total += 2 * k.sum().item() - k[:, :len(a_c)].sum().item()
        else:
            total += _rbf(a_c, b, sigmas).sum().item()            # (C, M)
    return total


@torch.no_grad()
def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] | None = None) -> float:
    """Unbiased squared maximum mean discrepancy MMD_u^2 between samples x (N, D) and y (M, D):

        MMD_u^2 = 1/(N(N-1)) sum_{i != j} k(x_i, x_j) + 1/(M(M-1)) sum_{i != j} k(y_i, y_j)
                  - 2/(NM) sum_{i, j} k(x_i, y_j),

    with k a sum of Gaussian kernels exp(-|a - b|^2 / (2 sigma^2)) over `bandwidths` sigma
    (default: the median pairwise distance of the pooled sample times 0.5, 1 and 2). Unbiased,
    so it can be slightly negative when x and y share a distribution.
    Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR 13, Lemma 6, Eq. (3).
    """
    _check_pair(x, y)
    for name, z in (("x", x), ("y", y)):
        if len(z) < 2:
            raise ValueError(f"{name} must hold at least 2 samples for MMD_u, got {len(z)}")
    if bandwidths is None:
        ladder = torch.tensor([0.5, 1.0, 2.0], device=x.device)
        sigmas = _median_distance(torch.cat([x, y])) * ladder    # (3,)
    else:
        sigmas = torch.as_tensor([check_in_range("bandwidths", s, 0, math.inf, low_open=True)
                                  for s in bandwidths], dtype=x.dtype, device=x.device)
        if len(sigmas) == 0:
            raise ValueError("bandwidths must hold at least one positive number, got none")
    N, M, n_k = len(x), len(y), len(sigmas)
    # the diagonal k(x_i, x_i) = n_k is left out of the two U-statistics
    k_xx = (_kernel_sum(x, None, sigmas) - N * n_k) / (N * (N - 1))
    k_yy = (_kernel_sum(y, None, sigmas) - M * n_k) / (M * (M - 1))
    k_xy = _kernel_sum(x, y, sigmas) / (N * M)
    return k_xx + k_yy - 2 * k_xy


# ---------------------------------------------------------------- Gaussian-mixture metrics


@dataclass(frozen=True)
class ModeCoverage:
    """How samples spread over the K modes of a Gaussian mixture (see `mode_coverage`)."""

    weights: torch.Tensor       # (K,) fraction of ALL samples on each mode
    true_weights: torch.Tensor  # (K,) the mixture's weights pi_k
    max_weight_error: float     # max_k |weights_k / sum(weights) - pi_k|, percentage points
    modes_covered: int          # modes with weights_k >= 0.2 pi_k
    off_mode_fraction: float    # fraction of samples on no mode

    def __str__(self) -> str:
        K = len(self.true_weights)
        return (f"modes covered {self.modes_covered}/{K}, max weight error "
                f"{self.max_weight_error:.1f} pp, off-mode {100 * self.off_mode_fraction:.1f}%")


def _log_resp_and_mahalanobis(x: torch.Tensor, mixture) -> tuple[torch.Tensor, torch.Tensor]:
    """log(pi_k N(x; mu_k, Sigma_k)) up to a constant, (N, K), and the Mahalanobis distances
    d_k(x) = |L_k^-1 (x - mu_k)|, (N, K), where Sigma_k = L_k L_k^T (Cholesky)."""
    pi, mu, Sigma = (torch.as_tensor(t).to(x) for t in
                     (mixture.weights, mixture.means, mixture.covs))      # (K,), (K, D), (K, D, D)
    L = torch.linalg.cholesky(Sigma)                              # (K, D, D)
    diff = (x[:, None, :] - mu).unsqueeze(-1)                     # (N, K, D, 1)
    z = torch.linalg.solve_triangular(L, diff, upper=False)       # (N, K, D, 1)
    d2 = z.square().sum(dim=(-2, -1))                             # (N, K)
    log_det = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)          # (K,) = 0.5 log|Sigma_k|
    return pi.log() - log_det - 0.5 * d2, d2.sqrt()


@torch.no_grad()
def mode_coverage(x: torch.Tensor, mixture, n_std: float = 3.0) -> ModeCoverage:
    """Assign x_n to mode k* = argmax_k pi_k N(x_n; mu_k, Sigma_k) (highest responsibility); it is
    on that mode only if its Mahalanobis distance sqrt((x - mu)^T Sigma^-1 (x - mu)) <= n_std.

    A mode counts as covered when it holds at least 20% of its true weight pi_k. The usual 2-D
    mode-collapse check (e.g. the ring/grid of Gaussians in Srivastava et al. 2017, "VEEGAN").
    """
    _check_samples(x, mixture)
    check_in_range("n_std", n_std, 0, math.inf, low_open=True)
    log_resp, dist = _log_resp_and_mahalanobis(x, mixture)       # (N, K), (N, K)
    k_star = log_resp.argmax(dim=1)                               # (N,)
    on_mode = (dist.gather(1, k_star[:, None]).squeeze(1) <= n_std).cpu()  # (N,)
    K = log_resp.shape[1]
    counts = torch.bincount(k_star.cpu()[on_mode], minlength=K).double()   # (K,)
    weights = counts / len(x)                                     # (K,)
    pi = torch.as_tensor(mixture.weights).detach().cpu().double()  # (K,)
    renormalised = weights / weights.sum() if counts.sum() > 0 else weights
    return ModeCoverage(
        weights=weights, true_weights=pi,
        max_weight_error=100 * (renormalised - pi).abs().max().item(),
        modes_covered=int((weights >= 0.2 * pi).sum()),
        off_mode_fraction=1.0 - on_mode.double().mean().item(),
    )


@torch.no_grad()
def exact_log_likelihood(x: torch.Tensor, mixture) -> float:
    """(1/N) sum_n log p_data(x_n) in nats: the true data density at generated samples.

    High means samples sit where the data is dense; it does not see missing modes (pair it
    with `mode_coverage`). Exact because p_data is the known mixture.
    """
    _check_samples(x, mixture)
    return mixture.log_prob(x).mean().item()


# ---------------------------------------------------------------- the 2-D quality bar
@dataclass(frozen=True)
class SampleQuality:
    """Samples of a 2-D model judged against the true mixture (see `sample_quality`)."""

    coverage: ModeCoverage
    sw: float          # mean sliced Wasserstein distance from x to fresh data sets of its size
    sw_floor: float    # mean distance between two fresh data sets of that size

    @property
    def sw_ratio(self) -> float:
        """SW / floor: about 1 for samples as good as fresh data."""
        return self.sw / self.sw_floor

    def passes(self, max_weight_error: float = 1.5, max_sw_ratio: float = 1.5) -> bool:
        """The course's quality bar: every mode weight within `max_weight_error` percentage
        points and SW at most `max_sw_ratio` times the data-vs-data floor."""
        return (self.coverage.max_weight_error <= max_weight_error
                and self.sw_ratio <= max_sw_ratio)

    def __str__(self) -> str:
        return f"{self.coverage}, SW {self.sw_ratio:.2f}x the data floor"


@torch.no_grad()
def sample_quality(x: torch.Tensor, mixture, repeats: int = 8,
                   generator: torch.Generator | None = None,
                   sw_floor: float | None = None) -> SampleQuality:
    """Mode coverage of x, and its sliced Wasserstein distance to fresh data beside the floor.

    One SW between two finite samples is noisy (on the 8-Gaussian ring, 10k points, a single
    ratio to a single floor swings by +-30%), so both numbers are means over `repeats` fresh
    data sets of len(x) points: SW = mean_r SW(x, y_r), floor = mean_r SW(y_r, y'_r).
    Pass `sw_floor` (a previous result's `.sw_floor` for the same mixture and len(x)) to skip
    recomputing it when judging several samplers.
    """
    _check_samples(x, mixture)
    check_positive_int("repeats", repeats)
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    n = len(x)
    fresh = [mixture.sample(n, generator=generator).to(x) for _ in range(repeats)]
    sw = sum(sliced_wasserstein(x, y) for y in fresh) / repeats
    if sw_floor is None:
        other = [mixture.sample(n, generator=generator).to(x) for _ in range(repeats)]
        sw_floor = sum(sliced_wasserstein(a, b) for a, b in zip(fresh, other)) / repeats
    return SampleQuality(coverage=mode_coverage(x, mixture), sw=sw, sw_floor=float(sw_floor))


# ------------------------------------------------------------------ Frechet distance
def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The Frechet (2-Wasserstein) distance between Gaussians fitted to two feature sets:

        FD = ||mu_x - mu_y||^2 + tr(C_x + C_y - 2 (C_x C_y)^{1/2})

    (Dowson & Landau 1982; the FID of Heusel et al. 2017 when the features are Inception's).
    x (N, D), y (M, D): features of generated and real images, e.g. the penultimate activations
    of the course's MNIST classifier (`nets.ConvClassifier.features`). Computed in float64 with
    SciPy's `sqrtm`; a small imaginary part from round-off is dropped. Biased upwards for small N:
    compare with the distance between two real sets of the same size.
    """
    import numpy as np
    from scipy import linalg

    _check_pair(x, y)
    for name, z in (("x", x), ("y", y)):
        if len(z) < 2:
            raise ValueError(f"{name} must hold at least two feature vectors, got shape {tuple(z.shape)}")
    a, b = (z.detach().double().cpu().numpy() for z in (x, y))
    mu_a, mu_b = a.mean(0), b.mean(0)
    C_a, C_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(C_a @ C_b)
    if np.iscomplexobj(root):
        root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(C_a + C_b - 2 * root))
