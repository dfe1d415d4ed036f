"""Tests for course_lib.metrics: each metric against an independent reference (SciPy, NumPy
double loops, torch.distributions) or a closed form."""
import dataclasses
import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.special import logsumexp
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from course_lib.metrics import (ModeCoverage, exact_log_likelihood, mmd, mode_coverage,
                                sliced_wasserstein)


class StandInMixture:
    """The four attributes metrics.py relies on, with log_prob from torch.distributions."""

    def __init__(self, weights, means, covs):
        self.weights, self.means, self.covs = weights, means, covs  # (K,), (K, D), (K, D, D)
        self._dist = MixtureSameFamily(Categorical(probs=weights),
                                       MultivariateNormal(means, covariance_matrix=covs))

    def log_prob(self, x):
        return self._dist.log_prob(x)                              # (N,)

    def sample(self, n, generator):
        """Samples (n, D) and their component labels (n,)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # (n,)
        z = torch.randn(n, self.means.shape[1], 1, generator=generator)              # (n, D, 1)
        L = torch.linalg.cholesky(self.covs)                                          # (K, D, D)
        return self.means[k] + (L[k] @ z).squeeze(-1), k


@pytest.fixture
def mixture():
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4])
    means = torch.tensor([[-5.0, -5.0], [-5.0, 5.0], [5.0, -5.0], [5.0, 5.0]])
    covs = torch.stack([torch.eye(2), 0.5 * torch.eye(2),
                        torch.tensor([[1.0, 0.6], [0.6, 0.8]]),
                        torch.tensor([[0.3, 0.0], [0.0, 1.5]])])
    return StandInMixture(weights, means, covs)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, g, dtype=torch.float64):
    return torch.randn(*shape, generator=g, dtype=dtype)


# ---------------------------------------------------------------- sliced Wasserstein


@pytest.mark.parametrize("N, M", [(40, 40), (50, 37)])
def test_sw_1d_matches_scipy(N, M):
    g = gen(1)
    x, y = randn(N, 1, g=g), 2 * torch.rand(M, 1, generator=g, dtype=torch.float64)
    ours = sliced_wasserstein(x, y, n_projections=1, p=1)
    assert ours == pytest.approx(scipy.stats.wasserstein_distance(x[:, 0], y[:, 0]), rel=1e-9)


def test_sw_1d_p2_unequal_sizes_matches_repeated_samples():
    # Repeating x M/g times and y N/g times (g = gcd) gives equal sizes with the same
    # distributions; then W_2 is the RMS of sorted differences.
    g = gen(2)
    x, y = randn(30, 1, g=g), randn(20, 1, g=g) + 1
    xs, ys = np.sort(np.repeat(x[:, 0].numpy(), 2)), np.sort(np.repeat(y[:, 0].numpy(), 3))
    reference = np.sqrt(np.mean((xs - ys) ** 2))
    assert sliced_wasserstein(x, y, n_projections=1, p=2) == pytest.approx(reference, rel=1e-9)


def test_sw_same_distribution_much_smaller_than_shifted():
    g = gen(3)
    x, y = torch.randn(2000, 2, generator=g), torch.randn(2000, 2, generator=g)
    same = sliced_wasserstein(x, y)
    shifted = sliced_wasserstein(x, y + torch.tensor([1.0, 0.0]))
    assert same < 0.1 * shifted


def test_sw2_gaussian_shift_closed_form():
    # W_2 between N(m.theta, 1) and N(0, 1) is |m.theta|; E_theta[(m.theta)^2] = |m|^2 / 2 in 2-D.
    g = gen(4)
    m = torch.tensor([3.0, -1.0])
    x, y = torch.randn(3000, 2, generator=g), torch.randn(2500, 2, generator=g) + m
    ours = sliced_wasserstein(x, y, n_projections=1000, generator=gen(5))
    assert ours == pytest.approx(m.norm().item() / math.sqrt(2), rel=0.05)


def test_sw_symmetric_and_deterministic():
    g = gen(6)
    x, y = torch.randn(300, 2, generator=g), torch.randn(200, 2, generator=g) * 2
    assert sliced_wasserstein(x, y) == pytest.approx(sliced_wasserstein(y, x), rel=1e-5)
    assert sliced_wasserstein(x, y) == sliced_wasserstein(x, y)
    assert sliced_wasserstein(x, y, generator=gen(7)) == sliced_wasserstein(x, y, generator=gen(7))


# ---------------------------------------------------------------- MMD


def naive_mmd_u(x, y, sigmas):
    """Gretton et al. (2012) Eq. (3), by explicit loops in NumPy."""
    k = lambda a, b: sum(np.exp(-np.sum((a - b) ** 2) / (2 * s**2)) for s in sigmas)
    N, M = len(x), len(y)
    k_xx = sum(k(x[i], x[j]) for i in range(N) for j in range(N) if i != j) / (N * (N - 1))
    k_yy = sum(k(y[i], y[j]) for i in range(M) for j in range(M) if i != j) / (M * (M - 1))
    k_xy = sum(k(x[i], y[j]) for i in range(N) for j in range(M)) / (N * M)
    return k_xx + k_yy - 2 * k_xy


def test_mmd_matches_naive_loops():
    g = gen(8)
    x, y = randn(30, 2, g=g), randn(20, 2, g=g) + 0.5
    x_np, y_np = x.numpy(), y.numpy()
    reference = naive_mmd_u(x_np, y_np, [0.3, 1.0])
    assert mmd(x, y, bandwidths=[0.3, 1.0]) == pytest.approx(reference, rel=1e-9)
    # default bandwidths: median distance over the pooled 50 points (1225 pairs) x (0.5, 1, 2)
    z = np.concatenate([x_np, y_np])
    med = np.median([np.linalg.norm(z[i] - z[j]) for i in range(50) for j in range(i + 1, 50)])
    assert mmd(x, y) == pytest.approx(naive_mmd_u(x_np, y_np, [0.5 * med, med, 2 * med]), rel=1e-9)


def test_mmd_near_zero_for_same_distribution_positive_for_shifted():
    g = gen(9)
    x, y = torch.randn(800, 2, generator=g), torch.randn(800, 2, generator=g)
    shifted = mmd(x, y + torch.tensor([1.0, 0.0]))
    assert abs(mmd(x, y)) < 0.01 < 0.1 < shifted


# ---------------------------------------------------------------- mode coverage and likelihood


def reference_assignment(x, mixture, n_std):
    """Highest-responsibility component and whether it lies within n_std (explicit inverse)."""
    components = MultivariateNormal(mixture.means, covariance_matrix=mixture.covs)
    log_p = components.log_prob(x[:, None, :])                   # (N, K)
    k = (mixture.weights.log() + log_p).argmax(dim=1)             # (N,)
    diff = x - mixture.means[k]                                   # (N, D)
    d2 = torch.einsum("nd,nde,ne->n", diff, torch.linalg.inv(mixture.covs)[k], diff)
    return k, d2 <= n_std**2


def test_mode_coverage_exact_samples(mixture):
    x, _ = mixture.sample(4000, gen(10))
    cov = mode_coverage(x, mixture)
    k, on = reference_assignment(x, mixture, 3.0)
    expected = torch.bincount(k[on], minlength=4).double() / len(x)
    torch.testing.assert_close(cov.weights, expected)
    assert cov.modes_covered == 4 and cov.max_weight_error < 3.0
    # in 2-D the squared Mahalanobis distance is chi^2_2, so P(d > 3) = exp(-9/2)
    assert cov.off_mode_fraction == pytest.approx(math.exp(-4.5), abs=0.006)
    assert cov.weights.sum().item() == pytest.approx(1 - cov.off_mode_fraction)
    assert "4/4" in str(cov)


def test_mode_coverage_dropped_component(mixture):
    x, labels = mixture.sample(4000, gen(11))
    cov = mode_coverage(x[labels != 2], mixture)
    assert cov.modes_covered == 3 and cov.weights[2] == 0
    assert cov.max_weight_error > 25  # mode 2 has 30% of the true weight


def test_mode_coverage_far_points_are_off_mode(mixture):
    x, _ = mixture.sample(1000, gen(12))
    far = torch.tensor([[40.0, 0.0], [0.0, 40.0], [-30.0, 30.0], [0.0, 0.0]]).repeat(250, 1)
    assert mode_coverage(far, mixture).off_mode_fraction == 1.0
    assert mode_coverage(far, mixture).modes_covered == 0
    both = mode_coverage(torch.cat([x, far]), mixture)
    alone = mode_coverage(x, mixture).off_mode_fraction
    assert both.off_mode_fraction == pytest.approx(0.5 + alone / 2)
    assert mode_coverage(far, mixture, n_std=100.0).off_mode_fraction == 0.0


def test_mode_coverage_is_frozen(mixture):
    cov = mode_coverage(mixture.sample(100, gen(13))[0], mixture)
    assert isinstance(cov, ModeCoverage)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cov.modes_covered = 0


def test_exact_log_likelihood(mixture):
    x, _ = mixture.sample(500, gen(14))
    ours = exact_log_likelihood(x, mixture)
    assert ours == pytest.approx(mixture.log_prob(x).mean().item())
    per_k = [scipy.stats.multivariate_normal(m.numpy(), c.numpy()).logpdf(x.numpy())
             for m, c in zip(mixture.means, mixture.covs)]
    scipy_ll = logsumexp(np.stack(per_k) + np.log(mixture.weights.numpy())[:, None], axis=0).mean()
    assert ours == pytest.approx(scipy_ll, rel=1e-5)


# ---------------------------------------------------------------- bad input


def test_bad_input(mixture):
    x = torch.randn(10, 2)
    with pytest.raises(TypeError, match="x"):
        sliced_wasserstein(x.tolist(), x)
    with pytest.raises(TypeError, match="x"):
        mmd(torch.ones(10, 2, dtype=torch.long), x)
    with pytest.raises(ValueError, match="x"):
        sliced_wasserstein(torch.randn(10), x)
    with pytest.raises(ValueError, match="y"):
        sliced_wasserstein(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="y"):
        mmd(x, torch.randn(10, 3))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_wasserstein(x, x, n_projections=0)
    with pytest.raises(ValueError, match="p"):
        sliced_wasserstein(x, x, p=0.5)
    with pytest.raises(ValueError, match="y"):
        mmd(x, x[:1])
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(x, x, bandwidths=[1.0, -1.0])
    with pytest.raises(ValueError, match="x"):
        mode_coverage(torch.randn(10, 3), mixture)
    with pytest.raises(ValueError, match="n_std"):
        mode_coverage(x, mixture, n_std=0.0)
    with pytest.raises(TypeError, match="x"):
        exact_log_likelihood(np.zeros((10, 2)), mixture)


# ---------------------------------------------------------------- the 2-D quality bar


def test_sample_quality_is_the_mean_of_explicit_sliced_wasserstein_calls():
    from course_lib.data.mixture import make_mixture
    from course_lib.metrics import sample_quality
    mix = make_mixture("eight_unequal")
    x = mix.sample(500, generator=gen(3))
    q = sample_quality(x, mix, repeats=3, generator=gen(7))
    g = gen(7)                                           # replay the fresh data sets it drew
    fresh = [mix.sample(500, generator=g) for _ in range(6)]
    sw = np.mean([sliced_wasserstein(x, y) for y in fresh[:3]])
    floor = np.mean([sliced_wasserstein(a, b) for a, b in zip(fresh[:3], fresh[3:])])
    assert q.sw == pytest.approx(sw, rel=1e-12)
    assert q.sw_floor == pytest.approx(floor, rel=1e-12)
    again = sample_quality(x, mix, repeats=3, generator=gen(7), sw_floor=q.sw_floor)
    assert again.sw == q.sw and again.sw_floor == q.sw_floor
    ref = mode_coverage(x, mix)
    assert torch.equal(q.coverage.weights, ref.weights)
    assert q.coverage.max_weight_error == ref.max_weight_error


def test_sample_quality_passes_fresh_data_and_fails_distorted_samples():
    from course_lib.data.mixture import make_mixture
    from course_lib.metrics import sample_quality
    mix = make_mixture("eight_unequal")
    x, k = mix.sample(8000, generator=gen(4), return_labels=True)
    good = sample_quality(x, mix)
    assert 0.7 < good.sw_ratio < 1.4 and good.passes(), str(good)
    # three times the spread of every mode: SW sees it, mode weights do not
    wide = mix.means[k] + 3.0 * (x - mix.means[k])
    q = sample_quality(wide, mix)
    assert q.sw_ratio > 1.5 and not q.passes(), str(q)
    # the heaviest mode loses half its points: mode weights see it
    drop = (k == 7) & (torch.arange(len(k)) % 2 == 0)
    q = sample_quality(x[~drop], mix)
    assert q.coverage.max_weight_error > 5 and not q.passes(), str(q)
    assert "SW" in str(q) and "pp" in str(q)


def test_sample_quality_rejects_bad_arguments():
    from course_lib.data.mixture import make_mixture
    from course_lib.metrics import sample_quality
    mix = make_mixture("eight_gaussians")
    with pytest.raises(ValueError, match="repeats"):
        sample_quality(mix.sample(10), mix, repeats=0)
    with pytest.raises(ValueError, match="x"):
        sample_quality(torch.zeros(10, 3), mix)


# ------------------------------------------------------------------ Frechet distance
def test_frechet_distance_matches_the_gaussian_closed_form():
    """For diagonal covariances, FD = |mu_a - mu_b|^2 + sum_i (s_a,i - s_b,i)^2 with s the std;
    checked on samples built to have exactly the given mean and covariance (whitened draws)."""
    from course_lib.metrics import frechet_distance

    def exact_moments(n, mu, std, seed):
        z = torch.randn(n, len(mu), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        z = z - z.mean(0)
        L = torch.linalg.cholesky(torch.cov(z.T))
        z = z @ torch.linalg.inv(L).T                    # sample covariance exactly I
        return mu + z * std

    mu_a, std_a = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, 2.0])
    mu_b, std_b = torch.tensor([1.0, 1.0, 0.0]), torch.tensor([2.0, 0.5, 1.0])
    a, b = exact_moments(500, mu_a, std_a, 0), exact_moments(700, mu_b, std_b, 1)
    expected = (mu_a - mu_b).pow(2).sum() + (std_a - std_b).pow(2).sum()
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)


def test_frechet_distance_of_a_rotated_copy_is_zero_only_for_isotropic_data():
    """A rotation keeps the mean 0 and an isotropic covariance, so FD stays ~0; for anisotropic
    data it changes the covariance, and FD = sum (sqrt(l_i) - sqrt(l'_i))^2 in the shared basis."""
    from course_lib.metrics import frechet_distance

    g = torch.Generator().manual_seed(3)
    iso = torch.randn(20_000, 2, generator=g, dtype=torch.float64)
    R = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)      # 90 degrees
    assert frechet_distance(iso, iso @ R.T) < 0.01
    aniso = iso * torch.tensor([3.0, 1.0], dtype=torch.float64)
    assert frechet_distance(aniso, aniso @ R.T) == pytest.approx(2 * (3 - 1) ** 2, rel=0.05)


def test_frechet_distance_rejects_bad_input():
    from course_lib.metrics import frechet_distance
    with pytest.raises(ValueError, match="x must hold at least two"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="y"):
        frechet_distance(torch.zeros(4, 3), torch.zeros(5, 2))
