"""Gaussian identities against torch.distributions, Monte Carlo and joint-Gaussian conditioning."""
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from course_lib.gaussians import gaussian_kl, linear_gaussian_posterior, mc_estimate, reparameterize


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(10, 4, generator=g, dtype=torch.float64) for _ in range(4))
    ref = kl_divergence(Normal(mu_q, (lv_q / 2).exp()), Normal(mu_p, (lv_p / 2).exp())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu_q, lv_q, mu_p, lv_p), ref)
    ref0 = kl_divergence(Normal(mu_q, (lv_q / 2).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu_q, lv_q), ref0)


def test_gaussian_kl_matches_monte_carlo():
    mu_q, lv_q = torch.tensor([0.5, -1.0]), torch.tensor([0.2, -0.7])
    mu_p, lv_p = torch.tensor([0.0, 0.3]), torch.tensor([0.4, 0.1])
    z = reparameterize(mu_q.expand(400_000, 2), lv_q.expand(400_000, 2),
                       generator=torch.Generator().manual_seed(1))
    log_ratio = (Normal(mu_q, (lv_q / 2).exp()).log_prob(z) - Normal(mu_p, (lv_p / 2).exp()).log_prob(z)).sum(-1)
    est, se = mc_estimate(lambda v: v, log_ratio)
    assert abs(est - gaussian_kl(mu_q, lv_q, mu_p, lv_p)) < 4 * se


def test_reparameterize_moments_and_gradient():
    mu = torch.tensor([1.0, -2.0], requires_grad=True)
    lv = torch.tensor([0.0, 1.0], requires_grad=True)
    z = reparameterize(mu.expand(100_000, 2), lv.expand(100_000, 2), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(z.mean(0).detach(), mu.detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0).detach(), (lv / 2).exp().detach(), atol=0.03, rtol=0)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.full((2,), 100_000.0))


def test_mc_estimate_standard_error_shrinks_like_one_over_sqrt_m():
    g = torch.Generator().manual_seed(3)
    spreads = [torch.stack([mc_estimate(torch.sin, torch.randn(m, generator=g))[0] for _ in range(300)]).std()
               for m in (100, 400)]
    assert 1.6 < spreads[0] / spreads[1] < 2.5     # sqrt(400 / 100) = 2


def test_linear_gaussian_posterior_matches_joint_conditioning():
    """Condition the joint Gaussian of (mu, z) in 1-D directly: an independent computation."""
    mu0, gamma0, c, b, gamma = 0.7, 2.0, 1.5, -0.3, 0.5
    joint = MultivariateNormal(torch.tensor([mu0, c * mu0 + b], dtype=torch.float64),
                               torch.tensor([[gamma0, c * gamma0], [c * gamma0, c**2 * gamma0 + gamma]],
                                            dtype=torch.float64))
    S = joint.covariance_matrix
    z = torch.tensor([1.2], dtype=torch.float64)
    mean_ref = mu0 + S[0, 1] / S[1, 1] * (z - joint.mean[1])
    var_ref = S[0, 0] - S[0, 1] ** 2 / S[1, 1]
    mean, var = linear_gaussian_posterior(z, torch.tensor(mu0, dtype=torch.float64), gamma0, c, b, gamma)
    torch.testing.assert_close(mean, mean_ref)
    assert var == pytest.approx(float(var_ref))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="mu and logvar"):
        reparameterize(torch.zeros(2), torch.zeros(3))
    with pytest.raises(TypeError, match="mu_q"):
        gaussian_kl([0.0], torch.zeros(1))
    with pytest.raises(ValueError, match="x must hold"):
        mc_estimate(torch.sin, torch.zeros(1))
    with pytest.raises(ValueError, match="gamma0"):
        linear_gaussian_posterior(torch.zeros(1), torch.zeros(1), -1.0, 1.0, 0.0, 1.0)
