"""The oracle against independent computations: torch.distributions, autograd, Monte Carlo."""
import pytest
import torch
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from course_lib.data.mixture import MIXTURES, GaussianMixture, make_mixture, ring_mixture


def reference_marginal(gm: GaussianMixture, a: float) -> MixtureSameFamily:
    """q_t built directly with torch.distributions from the forward-process definition."""
    eye = torch.eye(gm.dim, dtype=gm.means.dtype)
    comp = MultivariateNormal(a**0.5 * gm.means, a * gm.covs + (1 - a) * eye)
    return MixtureSameFamily(Categorical(probs=gm.weights), comp)


@pytest.fixture(params=MIXTURES)
def gm(request):
    return make_mixture(request.param).to(dtype=torch.float64)


@pytest.mark.parametrize("a", [1.0, 0.9, 0.3, 0.01])
def test_marginal_log_prob_matches_torch_distributions(gm, a):
    x = gm.sample(500, torch.Generator().manual_seed(0)) * 1.3
    ref = reference_marginal(gm, a).log_prob(x)
    torch.testing.assert_close(gm.marginal_log_prob(x, a), ref)
    torch.testing.assert_close(gm.noised(a).log_prob(x), ref)


@pytest.mark.parametrize("a", [0.95, 0.5, 0.05])
def test_score_equals_autograd_of_log_density(gm, a):
    x = gm.sample(300, torch.Generator().manual_seed(1)).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.marginal_log_prob(x, a).sum(), x)
    torch.testing.assert_close(gm.marginal_score(x.detach(), a), grad)


def test_per_sample_alpha_bar_matches_scalar_calls(gm):
    x = gm.sample(6, torch.Generator().manual_seed(2))
    a = torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2, 0.01], dtype=torch.float64)
    for fn in (gm.marginal_log_prob, gm.marginal_score, gm.posterior_mean_x0):
        batched = fn(x, a)
        single = torch.cat([fn(x[i:i + 1], float(a[i])) for i in range(6)])
        torch.testing.assert_close(batched, single)


@pytest.mark.parametrize("a", [0.9, 0.4, 0.05])
def test_posterior_mean_satisfies_tweedie(gm, a):
    """Tweedie (Luo 2022, Eq. 133): sqrt(a) E[x_0|x_t] = x_t + (1 - a) grad log q_t(x_t)."""
    xt = reference_marginal(gm, a).sample((400,))
    tweedie = (xt + (1 - a) * gm.marginal_score(xt, a)) / a**0.5
    torch.testing.assert_close(gm.posterior_mean_x0(xt, a), tweedie)


def test_noised_marginal_matches_monte_carlo_noising():
    """Noise data samples with q(x_t|x_0) and compare moments and density with q_t."""
    gm = make_mixture("eight_unequal").to(dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    a = 0.4
    x0 = gm.sample(200_000, g)
    xt = a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    exact = reference_marginal(gm, a)
    torch.testing.assert_close(xt.mean(0), exact.mean, atol=0.01, rtol=0)
    comp = exact.component_distribution
    second = (gm.weights[:, None, None] * (comp.covariance_matrix
              + comp.mean[:, :, None] * comp.mean[:, None, :])).sum(0)
    cov = second - exact.mean[:, None] * exact.mean[None, :]
    torch.testing.assert_close(xt.T.cov(), cov, atol=0.02, rtol=0)
    # The average log-density of the noised samples is the (negative) entropy of q_t: check it
    # against an independent Monte Carlo estimate from q_t's own sampler.
    own = exact.sample((200_000,))
    assert abs(gm.marginal_log_prob(xt, a).mean() - gm.marginal_log_prob(own, a).mean()) < 0.02


def test_posterior_mean_matches_monte_carlo_conditional_mean():
    """E[x_0 | x_t] against the average of x_0 over pairs whose x_t falls in a small box (1-D)."""
    gm = make_mixture("bimodal_1d").to(dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    a = 0.5
    x0 = gm.sample(2_000_000, g)
    xt = a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    for centre in (-0.8, 0.0, 0.6):
        inside = x0[(xt[:, 0] - centre).abs() < 0.01, 0]
        exact = gm.posterior_mean_x0(torch.tensor([[centre]], dtype=torch.float64), a)
        standard_error = inside.std() / inside.numel() ** 0.5
        assert abs(float(inside.mean()) - float(exact)) < 4 * standard_error + 0.005


def test_sampling_recovers_weights_and_labels():
    gm = make_mixture("three_unequal")
    x, k = gm.sample(100_000, torch.Generator().manual_seed(5), return_labels=True)
    freq = torch.bincount(k, minlength=3).float() / k.numel()
    torch.testing.assert_close(freq, gm.weights, atol=0.01, rtol=0)
    assert (gm.responsibilities(x).argmax(1) == k).float().mean() > 0.99


def test_ring_is_on_the_circle():
    gm = ring_mixture(k=5, radius=3.0)
    torch.testing.assert_close(gm.means.norm(dim=1), torch.full((5,), 3.0))


def test_bad_inputs_raise_named_errors():
    gm = make_mixture("eight_gaussians")
    with pytest.raises(ValueError, match="alpha_bar_t"):
        gm.marginal_score(torch.zeros(3, 2), 1.5)
    with pytest.raises(ValueError, match="alpha_bar_t"):
        gm.marginal_log_prob(torch.zeros(3, 2), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="x"):
        gm.log_prob(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="x"):
        gm.log_prob([[0.0, 0.0]])
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.tensor([0.5, 0.6]), torch.zeros(2, 2), torch.eye(2).repeat(2, 1, 1))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), -torch.eye(2)[None])
    with pytest.raises(ValueError, match="name"):
        make_mixture("nine_gaussians")
