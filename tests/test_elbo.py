"""The exact linear-Gaussian model against numerical integration, Bayes on a grid and Monte Carlo."""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from course_lib.elbo import LinearGaussianModel, iwae_from_log_weights, log_normal

W, B, S = 1.5, 0.3, 0.7
X = torch.tensor([-2.0, -0.4, 0.3, 1.1, 3.5], dtype=torch.float64)


@pytest.fixture
def model() -> LinearGaussianModel:
    return LinearGaussianModel(W, B, S)


def joint_density(z, x):
    """p(x, z) = N(z; 0, 1) N(x; w z + b, s^2), written out in NumPy: the reference for the tests."""
    return np.exp(-z ** 2 / 2 - (x - W * z - B) ** 2 / (2 * S ** 2)) / (2 * np.pi * S)


def test_log_evidence_matches_numerical_integration(model):
    ref = [math.log(integrate.quad(joint_density, -12, 12, args=(x,))[0]) for x in X.tolist()]
    torch.testing.assert_close(model.log_evidence(X), torch.tensor(ref, dtype=torch.float64))


def test_log_joint_matches_scipy(model):
    z = torch.tensor([-1.0, 0.0, 0.5, 2.0, -0.3], dtype=torch.float64)
    ref = [stats.norm.logpdf(zi) + stats.norm.logpdf(xi, W * zi + B, S)
           for zi, xi in zip(z.tolist(), X.tolist())]
    torch.testing.assert_close(model.log_joint(X, z), torch.tensor(ref, dtype=torch.float64))


def test_posterior_matches_bayes_on_a_grid(model):
    z = np.linspace(-8, 8, 20001)
    mean, var = model.posterior(X)
    for i, x in enumerate(X.tolist()):
        post = joint_density(z, x)
        post /= np.trapezoid(post, z)                                  # Bayes: p(z|x) ∝ p(z) p(x|z)
        m = np.trapezoid(z * post, z)
        v = np.trapezoid((z - m) ** 2 * post, z)
        assert mean[i].item() == pytest.approx(m, abs=1e-6)
        assert var[i].item() == pytest.approx(v, abs=1e-6)


def test_closed_form_elbo_matches_monte_carlo(model):
    q_mean = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
    q_var = torch.tensor([0.3, 1.0, 2.0, 0.1, 0.5], dtype=torch.float64)
    est, se = model.elbo_mc(X, q_mean, q_var, M=20_000, generator=torch.Generator().manual_seed(0))
    assert est.shape == se.shape == X.shape
    assert ((est - model.elbo(X, q_mean, q_var)).abs() < 4 * se).all()


def test_elbo_matches_quadrature_of_its_definition(model):
    """E_q[log p(x, z) - log q(z)] by quadrature, independent of the closed form."""
    x, m, v = 1.1, -0.2, 0.4
    q = stats.norm(m, v ** 0.5)
    ref = integrate.quad(lambda z: q.pdf(z) * (math.log(joint_density(z, x)) - q.logpdf(z)),
                         m - 15 * v ** 0.5, m + 15 * v ** 0.5)[0]
    assert model.elbo(torch.tensor(x, dtype=torch.float64), m, v).item() == pytest.approx(ref, abs=1e-8)


def test_elbo_is_the_evidence_at_the_posterior(model):
    torch.testing.assert_close(model.elbo(X, *model.posterior(X)), model.log_evidence(X))
    torch.testing.assert_close(model.kl_to_posterior(X, *model.posterior(X)), torch.zeros_like(X))


def test_gap_is_the_kl_to_the_posterior(model):
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        q_mean = 2 * torch.randn(X.shape, generator=g, dtype=torch.float64)
        q_var = torch.rand(X.shape, generator=g, dtype=torch.float64) * 3 + 0.05
        gap = model.log_evidence(X) - model.elbo(X, q_mean, q_var)
        kl = model.kl_to_posterior(X, q_mean, q_var)
        torch.testing.assert_close(gap, kl)
        assert (kl > 0).all()


def test_numbers_broadcast_against_x(model):
    out = model.elbo(X, 0.0, 1.0)
    assert out.shape == X.shape and out.dtype == torch.float64
    assert model.kl_to_posterior(X, 0.0, 1.0).shape == X.shape
    assert model.elbo(X[:, None], torch.zeros(1, 3, dtype=torch.float64), 1.0).shape == (5, 3)


def test_iwae_bound_increases_with_k_towards_the_evidence(model):
    g = torch.Generator().manual_seed(2)
    post_mean, post_var = model.posterior(X)
    q_mean, q_var = post_mean - 0.8, 3 * post_var                         # a poor q: KL about 0.8
    log_px = model.log_evidence(X)
    bounds = [model.iwae_bound(X, q_mean, q_var, K=k, n_rep=1000, generator=g) for k in (1, 10, 100)]
    for (lo, se_lo), (hi, se_hi) in zip(bounds[:-1], bounds[1:]):
        assert (hi - lo > 2 * (se_lo ** 2 + se_hi ** 2).sqrt()).all()
    (l1, se1), (l100, se100) = bounds[0], bounds[-1]
    assert ((l1 - model.elbo(X, q_mean, q_var)).abs() < 4 * se1).all()         # L_1 is the ELBO
    assert (l100 < log_px + 4 * se100).all()                              # still a lower bound
    assert ((log_px - l100) < 0.05 * (log_px - l1)).all()                # and most of the gap is closed


def test_iwae_with_the_posterior_as_proposal_is_exact(model):
    est, se = model.iwae_bound(X, *model.posterior(X), K=5, n_rep=10)
    torch.testing.assert_close(est, model.log_evidence(X))
    torch.testing.assert_close(se, torch.zeros_like(X), atol=1e-6, rtol=0)


def test_iwae_from_log_weights_is_log_mean_exp():
    log_w = torch.tensor([[0.0, math.log(3.0)], [1000.0, 1000.0]], dtype=torch.float64)
    torch.testing.assert_close(iwae_from_log_weights(log_w), torch.tensor([math.log(2.0), 1000.0],
                                                                          dtype=torch.float64))
    assert iwae_from_log_weights(torch.tensor([-3.0])).item() == -3.0


def test_log_normal_matches_scipy():
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    ref = stats.norm.logpdf(x.numpy(), 0.3, 2.0)
    torch.testing.assert_close(log_normal(x, 0.3, 4.0), torch.from_numpy(ref))


def test_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="s must be > 0"):
        LinearGaussianModel(1.0, 0.0, 0.0)
    with pytest.raises(TypeError, match="w must be a real number"):
        LinearGaussianModel("1", 0.0, 1.0)
    with pytest.raises(ValueError, match="b must be finite"):
        LinearGaussianModel(1.0, math.nan, 1.0)
    with pytest.raises(ValueError, match="q_var"):
        model.elbo(X, 0.0, 0.0)
    with pytest.raises(ValueError, match="q_var"):
        model.kl_to_posterior(X, 0.0, -torch.ones(5, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must be"):
        model.log_evidence([1.0, 2.0])
    with pytest.raises(TypeError, match="q_mean"):
        model.elbo(X, "0", 1.0)
    with pytest.raises(ValueError, match="M must be >= 2"):
        model.elbo_mc(X, 0.0, 1.0, M=1)
    with pytest.raises(ValueError, match="K must be >= 1"):
        model.iwae_bound(X, 0.0, 1.0, K=0)
    with pytest.raises(TypeError, match="K must be an int"):
        model.iwae_bound(X, 0.0, 1.0, K=2.5)
    with pytest.raises(ValueError, match="n_rep"):
        model.iwae_bound(X, 0.0, 1.0, n_rep=1)
    with pytest.raises(ValueError, match="log_w"):
        iwae_from_log_weights(torch.tensor(1.0))
