"""A Gaussian mixture with everything exact: the course's oracle.

For data x_0 ~ p(x_0) = sum_k w_k N(m_k, S_k), the variance-preserving forward process
q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Luo 2022, Eq. 70) keeps the
mixture a mixture: the noised marginal is

    q_t(x_t) = sum_k w_k N(x_t; sqrt(alpha_bar_t) m_k, alpha_bar_t S_k + (1 - alpha_bar_t) I),

so its density, its score grad log q_t(x_t) and the denoiser E[x_0 | x_t] are all available in
closed form at every t. (Matrices are factorised once per component and noise level and
applied by matrix products, so a call on thousands of points stays fast.) Diffusion models trained on samples of p can then be compared with the
truth (notebooks 06-10). The class knows nothing about schedules: pass the value alpha_bar_t
(a float, or one value per sample as a (N,) tensor). alpha_bar_t = 1 is the clean data.
"""
from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_in_range, check_positive_int, check_tensor


class GaussianMixture:
    """p(x) = sum_k w_k N(x; m_k, S_k) in D dimensions, with exact noised marginals.

    Args:
        weights: (K,) mixing weights w_k, positive, summing to 1.
        means: (K, D) component means m_k.
        covs: (K, D, D) symmetric positive-definite covariances S_k.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor):
        check_tensor("weights", weights, ndim=1, floating=True)
        check_tensor("means", means, ndim=2, floating=True)
        check_tensor("covs", covs, ndim=3, floating=True)
        K, D = means.shape
        if weights.shape[0] != K or covs.shape != (K, D, D):
            raise ValueError(f"weights must be ({K},) and covs ({K}, {D}, {D}) to match means "
                             f"{tuple(means.shape)}; got {tuple(weights.shape)} and {tuple(covs.shape)}")
        if (weights <= 0).any() or abs(float(weights.sum()) - 1.0) > 1e-5:
            raise ValueError(f"weights must be positive and sum to 1, got {weights.tolist()}")
        if torch.linalg.cholesky_ex(covs).info.any():
            raise ValueError("covs must be symmetric positive-definite matrices")
        self.weights, self.means, self.covs = weights, means, covs

    # ----------------------------------------------------------------- basics
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy on another device and/or dtype (float64 for exactness checks)."""
        return GaussianMixture(*(a.to(device=device, dtype=dtype)
                                 for a in (self.weights, self.means, self.covs)))

    def sample(self, n: int, generator: torch.Generator | None = None,
               return_labels: bool = False):
        """Draw n samples x ~ p: pick k ~ Cat(w), then x = m_k + L_k z with S_k = L_k L_k^T."""
        check_positive_int("n", n)
        dev = self.means.device
        k = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator).to(dev)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype).to(dev)
        L = torch.linalg.cholesky(self.covs)                            # (K, D, D)
        x = self.means[k] + (L[k] @ z.unsqueeze(-1)).squeeze(-1)         # (n, D)
        return (x, k) if return_labels else x

    # ------------------------------------------------- the noised marginal q_t
    def _noised_params(self, alpha_bar_t, n: int):
        """Means sqrt(a) m_k and covariances a S_k + (1 - a) I, shaped (B, K, D[, D])."""
        a = torch.as_tensor(alpha_bar_t, dtype=self.means.dtype, device=self.means.device)
        if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != n):
            raise ValueError(f"alpha_bar_t must be a float or a ({n},) tensor, got shape {tuple(a.shape)}")
        if (a <= 0).any() or (a > 1).any():
            raise ValueError(f"alpha_bar_t must lie in (0, 1], got values in "
                             f"[{float(a.min()):.3g}, {float(a.max()):.3g}]")
        if a.ndim == 1 and bool((a == a[0]).all()):
            a = a[:1]                       # one noise level for the batch (as in samplers)
        a = a.reshape(-1, 1, 1)                                         # (B or 1, 1, 1)
        eye = torch.eye(self.dim, dtype=a.dtype, device=a.device)
        mean_t = a.sqrt() * self.means                                  # (B, K, D)
        cov_t = a.unsqueeze(-1) * self.covs + (1 - a).unsqueeze(-1) * eye  # (B, K, D, D)
        return a, mean_t, cov_t

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        return check_tensor("x", x, ndim=2, last_dim=self.dim, floating=True)

    def component_log_prob(self, x: torch.Tensor, alpha_bar_t=1.0) -> torch.Tensor:
        """log w_k + log N(x; sqrt(a) m_k, a S_k + (1-a) I) for every k: shape (N, K)."""
        self._check_x(x)
        _, mean_t, cov_t = self._noised_params(alpha_bar_t, x.shape[0])
        L = torch.linalg.cholesky(cov_t)                                 # (B, K, D, D)
        eye = torch.eye(self.dim, dtype=L.dtype, device=L.device)
        L_inv = torch.linalg.solve_triangular(L, eye, upper=False)       # once per (B, K)
        diff = x.unsqueeze(1) - mean_t                                   # (N, K, D)
        maha = _matvec(L_inv, diff).pow(2).sum(-1)                        # (N, K)
        logdet = 2 * torch.diagonal(L, dim1=-2, dim2=-1).log().sum(-1)   # (B, K)
        return self.weights.log() - 0.5 * (self.dim * math.log(2 * math.pi) + logdet + maha)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) for x of shape (N, D): shape (N,)."""
        return self.marginal_log_prob(x, 1.0)

    def responsibilities(self, x: torch.Tensor, alpha_bar_t=1.0) -> torch.Tensor:
        """r_k(x) = p(k | x) under q_t, shape (N, K); rows sum to 1."""
        return self.component_log_prob(x, alpha_bar_t).softmax(dim=-1)

    def marginal_log_prob(self, xt: torch.Tensor, alpha_bar_t) -> torch.Tensor:
        """log q_t(x_t) = logsumexp_k [log w_k + log N(x_t; sqrt(a) m_k, a S_k + (1-a) I)]."""
        return self.component_log_prob(xt, alpha_bar_t).logsumexp(dim=-1)

    def marginal_score(self, xt: torch.Tensor, alpha_bar_t) -> torch.Tensor:
        """grad_x log q_t(x_t) = -sum_k r_k(x_t) C_k^{-1} (x_t - sqrt(a) m_k), C_k = a S_k + (1-a) I.

        The exact score that a score network (Luo 2022, Eq. 148) tries to learn.
        """
        r = self.responsibilities(xt, alpha_bar_t)                       # (N, K)
        _, mean_t, cov_t = self._noised_params(alpha_bar_t, xt.shape[0])
        per_k = -_matvec(torch.linalg.inv(cov_t), xt.unsqueeze(1) - mean_t)  # (N, K, D)
        return (r.unsqueeze(-1) * per_k).sum(1)                           # (N, D)

    def posterior_mean_x0(self, xt: torch.Tensor, alpha_bar_t) -> torch.Tensor:
        """E[x_0 | x_t] by Gaussian conditioning inside each component, then mixing.

        Within component k, (x_0, x_t) is jointly Gaussian, so
        E[x_0 | x_t, k] = m_k + sqrt(a) S_k C_k^{-1} (x_t - sqrt(a) m_k), and
        E[x_0 | x_t] = sum_k r_k(x_t) E[x_0 | x_t, k]. Computed without the score, so that
        Tweedie's formula (Luo 2022, Eq. 133) can be checked against it.
        """
        r = self.responsibilities(xt, alpha_bar_t)                       # (N, K)
        a, mean_t, cov_t = self._noised_params(alpha_bar_t, xt.shape[0])
        gain = a.sqrt().unsqueeze(-1) * self.covs @ torch.linalg.inv(cov_t)  # (B, K, D, D)
        x0_k = self.means + _matvec(gain, xt.unsqueeze(1) - mean_t)       # (N, K, D)
        return (r.unsqueeze(-1) * x0_k).sum(1)                            # (N, D)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad_x log p(x), shape (N, D): the data score (`marginal_score` at alpha-bar = 1)."""
        return self.marginal_score(x, 1.0)

    def convolved(self, sigma: float) -> "GaussianMixture":
        """The law of x + sigma z, z ~ N(0, I): the same means, covariances S_k + sigma^2 I.

        The noise of score matching with noise-conditional networks (Song & Ermon 2019), which
        adds noise without shrinking x; `noised` is the variance-preserving version."""
        check_in_range("sigma", sigma, 0.0, math.inf, high_open=True)
        eye = torch.eye(self.dim, dtype=self.covs.dtype, device=self.covs.device)
        return GaussianMixture(self.weights, self.means, self.covs + float(sigma) ** 2 * eye)

    def noised(self, alpha_bar_t: float) -> "GaussianMixture":
        """q_t itself as a GaussianMixture (alpha_bar_t a single float in (0, 1])."""
        _, mean_t, cov_t = self._noised_params(float(alpha_bar_t), 1)
        return GaussianMixture(self.weights, mean_t[0], cov_t[0])


def _matvec(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A v for a batch: A (B, K, D, D) with B = 1 or N, v (N, K, D) -> (N, K, D).

    Written as a broadcast product and sum: for the small D of the toys this is far faster
    than a batched matmul over N * K tiny matrices.
    """
    return (A * v.unsqueeze(-2)).sum(-1)


# ---------------------------------------------------------------------- presets
def ring_mixture(k: int = 8, radius: float = 2.0, std: float = 0.1,
                 weights: list[float] | None = None) -> GaussianMixture:
    """k isotropic Gaussians of standard deviation `std` evenly spaced on a circle."""
    check_positive_int("k", k)
    angle = torch.arange(k, dtype=torch.float32) * (2 * math.pi / k)
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    w = torch.full((k,), 1.0 / k) if weights is None else torch.tensor(weights, dtype=torch.float32)
    return GaussianMixture(w / w.sum(), means, std**2 * torch.eye(2).expand(k, 2, 2).clone())


MIXTURES = ("eight_gaussians", "eight_unequal", "three_unequal", "bimodal_1d")


def make_mixture(name: str = "eight_unequal") -> GaussianMixture:
    """The course's named mixtures.

    - ``eight_gaussians``: 8 equal Gaussians on a ring of radius 2 (std 0.1 each).
    - ``eight_unequal``: the same ring with weights 1..8 (normalised), so that a model which
      loses the mixing weights is caught by the mode-weight metric.
    - ``three_unequal``: 3 well-separated 2-D Gaussians with weights 0.2, 0.3, 0.5, for
      Langevin dynamics (notebook 08).
    - ``bimodal_1d``: 1-D mixture 0.3 N(-1.5, 0.25^2) + 0.7 N(1, 0.4^2) (notebook 07).
    """
    check_choice("name", name, MIXTURES)
    if name == "eight_gaussians":
        return ring_mixture()
    if name == "eight_unequal":
        return ring_mixture(weights=[float(i) for i in range(1, 9)])
    if name == "three_unequal":
        means = torch.tensor([[-2.0, -1.5], [2.0, -1.5], [0.0, 2.0]])
        covs = torch.stack([0.3**2 * torch.eye(2), 0.4**2 * torch.eye(2),
                            torch.tensor([[0.25, 0.1], [0.1, 0.25]])])
        return GaussianMixture(torch.tensor([0.2, 0.3, 0.5]), means, covs)
    return GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5], [1.0]]),
                           torch.tensor([[[0.25**2]], [[0.4**2]]]))
