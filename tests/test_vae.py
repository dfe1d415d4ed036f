"""VAEs against torch.distributions, Monte Carlo, and a linear-Gaussian VAE whose ELBO is exact."""
import math

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from course_lib.data.toys import sample_toy
from course_lib.train import fit
from course_lib.vae import (HVAE, VAE, AutoEncoder, ConvDecoder, ConvEncoder, MLPDecoder,
                            MLPEncoder, active_units, latent_activity, log_likelihood,
                            mnist_hvae, mnist_vae, toy_vae)


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.bernoulli(torch.full((b, 1, 28, 28), 0.3), generator=gen(seed))


def small_mnist_vae(likelihood: str = "bernoulli") -> VAE:
    torch.manual_seed(0)
    return mnist_vae(latent_dim=4, hidden=(32,), likelihood=likelihood)


def mean_and_se(values: torch.Tensor) -> tuple[float, float]:
    return values.mean().item(), values.std().item() / values.numel() ** 0.5


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder, decoder", [
    (MLPEncoder((1, 28, 28), 8), MLPDecoder(8, (1, 28, 28))),
    (ConvEncoder(8), ConvDecoder(8)),
])
def test_image_encoders_and_decoders_shapes(encoder, decoder):
    x = images(5)
    mu, logvar = encoder(x)
    assert mu.shape == logvar.shape == (5, 8)
    assert decoder(mu).shape == (5, 1, 28, 28)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_mnist_vae_shapes(kind):
    model = mnist_vae(latent_dim=3, kind=kind)
    x = images(4)
    out = model.neg_elbo(x)
    assert out.total.shape == out.reconstruction.shape == out.kl.shape == (4,)
    assert model.reconstruct(x).shape == (4, 1, 28, 28)
    s = model.sample(6, generator=gen(0))
    assert s.shape == (6, 1, 28, 28) and 0 <= s.min() and s.max() <= 1      # Bernoulli: probabilities
    assert model.iwae_bound(x, K=3).shape == (4,)
    assert model.kl_per_dimension(x).shape == (4, 3)


def test_toy_vae_shapes():
    model = toy_vae(latent_dim=2, hidden=16)
    x = sample_toy("two_moons", 7, generator=gen(0))
    out = model.neg_elbo(x)
    assert out.total.shape == (7,) and out.loss.shape == ()
    assert model.encode(x)[0].shape == (7, 2)
    assert model.reconstruct(x).shape == (7, 2) and model.sample(9).shape == (9, 2)
    assert model.log_likelihood_estimate(x, K=20).shape == (7,)
    assert isinstance(model.log_sigma, nn.Parameter)                        # learned sigma


def test_autoencoder_shapes():
    ae = AutoEncoder((1, 28, 28), 5, hidden=(32,))
    x = images(3)
    assert ae.encode(x).shape == (3, 5) and ae(x).shape == (3, 1, 28, 28)
    assert ae.reconstruction_error(x).shape == (3,)
    assert not any(isinstance(m, nn.SiLU) for m in AutoEncoder((4,), 2, linear=True).modules())


# ----------------------------------------------------------------------------------------------
# Densities against torch.distributions
# ----------------------------------------------------------------------------------------------

def test_bernoulli_log_likelihood_matches_torch():
    logits = torch.randn(6, 1, 28, 28, generator=gen(1), dtype=torch.float64)
    x = torch.bernoulli(torch.full_like(logits, 0.4), generator=gen(2))
    ref = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(log_likelihood(x, logits, "bernoulli"), ref)
    grey = torch.rand(6, 1, 28, 28, generator=gen(3), dtype=torch.float64)   # x in [0, 1]: cross-entropy
    ref = Bernoulli(logits=logits, validate_args=False).log_prob(grey).flatten(1).sum(1)
    torch.testing.assert_close(log_likelihood(grey, logits, "bernoulli"), ref)


@pytest.mark.parametrize("sigma", [0.3, torch.tensor(1.7, dtype=torch.float64)])
def test_gaussian_log_likelihood_matches_torch(sigma):
    mean = torch.randn(5, 2, generator=gen(4), dtype=torch.float64)
    x = torch.randn(5, 2, generator=gen(5), dtype=torch.float64)
    ref = Normal(mean, torch.as_tensor(sigma, dtype=torch.float64)).log_prob(x).sum(1)
    torch.testing.assert_close(log_likelihood(x, mean, "gaussian", sigma=sigma), ref)


def test_kl_matches_torch_and_monte_carlo():
    model = small_mnist_vae().double()
    x = images(3).double()
    mu, logvar = model.encode(x)
    q = Normal(mu, (0.5 * logvar).exp())
    kl = model.neg_elbo(x).kl
    torch.testing.assert_close(kl, kl_divergence(q, Normal(0.0, 1.0)).sum(-1))
    z = q.sample((50_000,))                                                  # (M, B, D)
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)      # (M, B)
    se = log_ratio.std(0) / 50_000 ** 0.5
    assert ((log_ratio.mean(0) - kl).abs() < 4 * se).all()
    torch.testing.assert_close(model.kl_per_dimension(x).sum(1), kl)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 4.0])
def test_total_is_reconstruction_plus_beta_kl(beta):
    model = small_mnist_vae()
    out = model.neg_elbo(images(4), beta=beta)
    torch.testing.assert_close(out.total, out.reconstruction + beta * out.kl)
    assert out.loss == out.total.mean()


def test_reconstruction_is_one_reparameterised_sample():
    model = small_mnist_vae("gaussian")
    x = images(4)
    out = model.neg_elbo(x, generator=gen(7))
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen(7))
    ref = -Normal(model.decode(z), 0.1).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(out.reconstruction, ref)


# ----------------------------------------------------------------------------------------------
# IWAE bounds
# ----------------------------------------------------------------------------------------------

def test_iwae_k1_is_the_elbo_in_expectation_and_grows_with_k():
    """On the linear-Gaussian VAE below with a deliberately poor encoder (gap about 2 nats)."""
    model, x, log_px = linear_gaussian_vae(exact=False)
    exact_model, _, _ = linear_gaussian_vae(exact=True)
    q, posterior = (Normal(mu, (0.5 * logvar).exp())
                    for mu, logvar in (model.encode(x), exact_model.encode(x)))
    exact_elbo = (log_px - kl_divergence(q, posterior).sum(1)).mean().item()   # Luo Eq. 15
    M = 2000
    x = x.repeat(M, 1)                                                       # (M * 6, 5)
    with torch.no_grad():
        elbo = -model.neg_elbo(x, generator=gen(9)).total
        bounds = [model.iwae_bound(x, K=k, generator=gen(10 + k)) for k in (1, 10, 100)]
    (m_elbo, se_elbo), (m1, se1) = mean_and_se(elbo), mean_and_se(bounds[0])
    assert abs(m_elbo - exact_elbo) < 4 * se_elbo and abs(m1 - exact_elbo) < 4 * se1
    assert log_px.mean().item() - exact_elbo > 1.0                          # a real gap to close
    stats = [mean_and_se(b) for b in bounds]
    for (lo, se_lo), (hi, se_hi) in zip(stats[:-1], stats[1:]):
        assert hi - lo > 4 * math.hypot(se_lo, se_hi)
    m100, se100 = stats[-1]
    assert m100 < log_px.mean().item() + 4 * se100                          # still below log p(x)


def test_chunking_does_not_change_the_estimate():
    model = small_mnist_vae()
    x = images(3)
    a = model.log_likelihood_estimate(x, K=10, chunk=3, generator=gen(11))
    b = model.log_likelihood_estimate(x, K=10, chunk=3, generator=gen(11))
    torch.testing.assert_close(a, b)
    assert not a.requires_grad and model.iwae_bound(x, K=2).requires_grad


# ----------------------------------------------------------------------------------------------
# A linear-Gaussian VAE: the exact posterior gives ELBO = log p(x)
# ----------------------------------------------------------------------------------------------

class LinearDecoder(nn.Module):
    """p(x | z) = N(W z + c, s^2 I) with fixed W (d, k) and c (d,)."""

    def __init__(self, W: torch.Tensor, c: torch.Tensor):
        super().__init__()
        self.W, self.c = W, c
        self.latent_dim, self.out_shape = W.shape[1], (W.shape[0],)
        self.dummy = nn.Parameter(torch.zeros(()))                           # so .parameters() is not empty

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W.T + self.c


class FixedPosteriorEncoder(nn.Module):
    """q(z | x) = N(A (x - c), diag var): the given exact posterior, not learned."""

    def __init__(self, A: torch.Tensor, c: torch.Tensor, var: torch.Tensor):
        super().__init__()
        self.A, self.c, self.logvar = A, c, var.log()
        self.in_shape, self.latent_dim = (A.shape[1],), A.shape[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (x - self.c) @ self.A.T, self.logvar.expand(x.shape[0], -1)


def linear_gaussian_vae(exact: bool = True):
    """d = 5, k = 3; W has orthogonal columns so that the exact posterior covariance is diagonal.

    exact=False gives the encoder a shifted mean and a 4x too large variance instead.
    """
    g = gen(12)
    d, k, s = 5, 3, 0.5
    Q, _ = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))
    W = Q * torch.tensor([2.0, 1.0, 0.4], dtype=torch.float64)               # W^T W = diag(4, 1, 0.16)
    c = torch.randn(d, generator=g, dtype=torch.float64)
    # Gaussian conditioning: Cov(z | x) = (I + W^T W / s^2)^-1, E[z | x] = Cov W^T (x - c) / s^2
    cov = torch.linalg.inv(torch.eye(k, dtype=torch.float64) + W.T @ W / s ** 2)
    torch.testing.assert_close(cov, torch.diag(torch.diagonal(cov)))        # diagonal, as arranged
    shift = 0.0 if exact else 0.5
    scale = 1.0 if exact else 4.0
    model = VAE(FixedPosteriorEncoder(cov @ W.T / s ** 2, c + shift, scale * torch.diagonal(cov)),
                LinearDecoder(W, c), likelihood="gaussian", sigma=s).double()
    evidence = MultivariateNormal(c, W @ W.T + s ** 2 * torch.eye(d, dtype=torch.float64))
    x = c + torch.randn(6, d, generator=g, dtype=torch.float64) @ evidence.scale_tril.T   # x ~ p(x)
    return model, x, evidence.log_prob(x)                                    # log p(x), (6,)


def test_exact_posterior_makes_the_elbo_the_evidence():
    model, x, log_px = linear_gaussian_vae()
    M = 4000
    with torch.no_grad():
        elbo = -model.neg_elbo(x.repeat(M, 1), generator=gen(13)).total.view(M, -1)   # (M, 6)
    est, se = elbo.mean(0), elbo.std(0) / M ** 0.5
    assert ((est - log_px).abs() < 4 * se).all()
    assert (se < 0.05).all()


def test_exact_posterior_makes_the_importance_weights_constant():
    """log p(x, z) - log q(z | x) = log p(x) for every z when q is the posterior."""
    model, x, log_px = linear_gaussian_vae()
    torch.testing.assert_close(model.log_weights(x, K=7, generator=gen(14)), log_px[:, None].expand(6, 7))
    torch.testing.assert_close(model.log_likelihood_estimate(x, K=50, chunk=16), log_px)
    torch.testing.assert_close(model.iwae_bound(x, K=1), log_px)


# ----------------------------------------------------------------------------------------------
# The hierarchical VAE
# ----------------------------------------------------------------------------------------------

def small_hvae() -> HVAE:
    torch.manual_seed(0)
    return mnist_hvae(z1_dim=6, z2_dim=3, hidden=(32,), hidden_z=(16,)).double()


def test_hvae_shapes_and_decomposition():
    model = small_hvae()
    x = images(5).double()
    out = model.neg_elbo(x)
    for field in (out.total, out.reconstruction, out.kl_top, out.kl_bottom):
        assert field.shape == (5,)
    torch.testing.assert_close(out.total, out.reconstruction + out.kl_bottom + out.kl_top)
    assert (out.kl_top >= 0).all()
    s = model.sample(4, generator=gen(15))
    assert s.shape == (4, 1, 28, 28) and 0 <= s.min() and s.max() <= 1
    assert model.reconstruct(x).shape == x.shape
    assert model.log_weights(x, K=3).shape == (5, 3)


def test_hvae_weights_average_to_the_elbo_and_bound_it_from_above():
    model = small_hvae()
    x = images(2, seed=16).double().repeat(500, 1, 1, 1)                      # (1000, 1, 28, 28)
    with torch.no_grad():
        elbo = -model.neg_elbo(x, generator=gen(17)).total
        log_w1 = model.log_weights(x, K=1, generator=gen(18))[:, 0]
    (m_elbo, se_elbo), (m_w, se_w) = mean_and_se(elbo), mean_and_se(log_w1)
    assert abs(m_w - m_elbo) < 4 * math.hypot(se_elbo, se_w)                # both estimate the ELBO
    ll = model.log_likelihood_estimate(images(2, seed=16).double(), K=500, generator=gen(19))
    assert (ll.mean() > m_elbo + 4 * se_elbo).all()                          # ELBO <= log p(x) estimate


# ----------------------------------------------------------------------------------------------
# Active units, training, the linear autoencoder
# ----------------------------------------------------------------------------------------------

def test_active_units_ignores_a_dimension_whose_mean_ignores_x():
    torch.manual_seed(0)
    encoder = MLPEncoder((2,), 3, hidden=())                                 # linear: mu = A x + a
    with torch.no_grad():
        encoder.net[0].weight[1].zero_()                                     # mu_2 = a_2 for every x
        encoder.net[0].weight[0] *= 10
    model = VAE(encoder, MLPDecoder(3, (2,), hidden=(8,)), likelihood="gaussian")
    x = torch.randn(500, 2, generator=gen(20))
    activity = latent_activity(model, x)
    assert activity[1] == 0 and activity[0] > 0.01
    assert active_units(model, x) == int((activity > 0.01).sum()) and active_units(model, x) in (1, 2)
    assert active_units(model, x, threshold=1e9) == 0


def test_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    model = toy_vae(latent_dim=2, hidden=32)
    history = fit(model, lambda m, x: m.neg_elbo(x).loss,
                  lambda n: sample_toy("two_moons", n, generator=g), steps=300, batch_size=128,
                  lr=3e-3, progress=False, device="cpu", generator=(g := gen(21)))
    first, last = sum(history[:30]) / 30, sum(history[-30:]) / 30
    assert last < first - 0.5


def test_linear_autoencoder_finds_the_principal_subspace():
    g = gen(22)
    R, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    x = (torch.randn(2000, 5, generator=g) * torch.tensor([3.0, 2.0, 0.3, 0.2, 0.1])) @ R.T
    torch.manual_seed(0)
    ae = AutoEncoder((5,), 2, linear=True)
    fit(ae, lambda m, b: m.reconstruction_error(b).mean(), x, steps=500, batch_size=256, lr=1e-2,
        progress=False, device="cpu", generator=g)
    C = ae.decoder.net[0].weight.detach()                                    # (5, 2): D(z) = C z + c
    P_ae = C @ torch.linalg.pinv(C)                                          # projector onto span(C)
    xc = x - x.mean(0)
    U = torch.linalg.svd(xc, full_matrices=False).Vh[:2].T                   # (5, 2) top PCs
    torch.testing.assert_close(P_ae, U @ U.T, atol=0.05, rtol=0)


# ----------------------------------------------------------------------------------------------
# Bad inputs
# ----------------------------------------------------------------------------------------------

def test_bad_inputs_raise():
    model = small_mnist_vae()
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\)"):
        model.neg_elbo(torch.zeros(4, 784))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        model.neg_elbo(torch.zeros(4, 1, 28, 28, dtype=torch.long))
    with pytest.raises(ValueError, match="K must be >= 1"):
        model.iwae_bound(images(2), K=0)
    with pytest.raises(ValueError, match="K must be >= 1"):
        model.log_likelihood_estimate(images(2), K=0)
    with pytest.raises(ValueError, match="chunk"):
        model.log_likelihood_estimate(images(2), K=5, chunk=0)
    with pytest.raises(ValueError, match="beta"):
        model.neg_elbo(images(2), beta=-1.0)
    with pytest.raises(ValueError, match="likelihood"):
        mnist_vae(likelihood="poisson")
    with pytest.raises(ValueError, match="kind"):
        mnist_vae(kind="rnn")
    with pytest.raises(ValueError, match="likelihood"):
        log_likelihood(images(2), images(2), "laplace")
    with pytest.raises(ValueError, match="x and params"):
        log_likelihood(images(2), images(3), "bernoulli")
    with pytest.raises(ValueError, match="sigma"):
        log_likelihood(images(2), images(2), "gaussian", sigma=0.0)
    with pytest.raises(ValueError, match="latent_dim"):
        MLPEncoder((2,), 0)
    with pytest.raises(ValueError, match="channels"):
        ConvEncoder(4, channels=(8,))
    with pytest.raises(TypeError, match="decoder"):
        VAE(MLPEncoder((2,), 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="latent_dim"):
        VAE(MLPEncoder((2,), 2), MLPDecoder(3, (2,)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\)"):
        small_hvae().neg_elbo(torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="learn_sigma"):
        VAE(MLPEncoder((2,), 2), MLPDecoder(2, (2,)), likelihood="bernoulli", learn_sigma=True)
    with pytest.raises(TypeError, match="model"):
        active_units(AutoEncoder((2,), 1), torch.zeros(3, 2))
