"""Variational autoencoders (notebook 02) and a two-level hierarchical VAE (notebook 03).

Pieces (each an ``nn.Module``):

- encoders map x to the parameters of q(z | x) = N(mu, diag(exp(logvar))) (Luo 2022, Eq. 20):
  ``encoder(x) -> (mu, logvar)``, each (B, latent_dim);
- decoders map z to the parameters of p(x | z), shaped like x: logits for a Bernoulli
  likelihood, the mean for a Gaussian one with fixed sigma (lecture chapter, Sec. 1.2.2);
- `VAE` puts an encoder and a decoder together with the prior p(z) = N(0, I) (Luo Eq. 21) and
  gives the negative ELBO split into reconstruction and prior-matching terms (Luo Eq. 19),
  importance-weighted bounds and log-likelihood estimates (Burda et al. 2016), samples and
  reconstructions; `HVAE` does the same for the Markovian HVAE of Luo Eq. 23-29 with two levels.

An encoder carries ``in_shape`` and ``latent_dim``; a decoder carries ``latent_dim`` and
``out_shape`` (the shape of one x). The models read them to check their inputs.

Shapes: x is (B, *x_shape), e.g. (B, 1, 28, 28) for MNIST or (B, 2) for 2-D toys; z is (B, D).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, check_in_range, check_positive_int, check_tensor
from .elbo import iwae_from_log_weights
from .gaussians import gaussian_kl, reparameterize

LIKELIHOODS = ("bernoulli", "gaussian")
LOG_2PI = math.log(2 * math.pi)
MNIST_SHAPE = (1, 28, 28)
MAX_CHUNK_ROWS = 8192    # decoder rows per pass (samples x examples) when chunk is automatic


# ----------------------------------------------------------------------------------------------
# Densities
# ----------------------------------------------------------------------------------------------

def log_likelihood(x: torch.Tensor, params: torch.Tensor, likelihood: str = "bernoulli",
                   sigma: float | torch.Tensor = 1.0) -> torch.Tensor:
    """log p(x | z) for one decoder output per example, summed over all non-batch dims: (B,).

    - "bernoulli": params are logits l, p(x_i | z) = Ber(x_i; sigmoid(l_i)), so
      log p(x | z) = sum_i [x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i))]
      (lecture chapter, Remark 1.8), computed stably as -BCE-with-logits. Exact for binary x;
      x in [0, 1] is accepted (the usual grey-level "Bernoulli" loss), but then the value is not
      a normalised log-density (Loaiza-Ganem & Cunningham 2019).
    - "gaussian": params are the mean mu, p(x | z) = N(x; mu, sigma^2 I), so
      log p(x | z) = -d log(sqrt(2 pi) sigma) - ||x - mu||^2 / (2 sigma^2) (chapter, Eq. 1.3).
      sigma is a positive number or a scalar tensor (a learned sigma).
    """
    check_tensor("x", x, floating=True)
    check_tensor("params", params, floating=True)
    check_choice("likelihood", likelihood, LIKELIHOODS)
    if x.shape != params.shape or x.ndim < 2:
        raise ValueError(f"x and params must have one shape (B, ...), got {tuple(x.shape)} "
                         f"and {tuple(params.shape)}")
    if likelihood == "bernoulli":
        log_p = -F.binary_cross_entropy_with_logits(params, x, reduction="none")
    else:
        sigma = _check_sigma(sigma)
        log_sigma = sigma.log() if isinstance(sigma, torch.Tensor) else math.log(sigma)
        log_p = -0.5 * LOG_2PI - log_sigma - 0.5 * ((x - params) / sigma) ** 2
    return log_p.flatten(1).sum(1)                                         # (B,)


def _check_sigma(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """A positive number, or a scalar tensor (learned sigma: its positivity is by construction)."""
    if isinstance(sigma, torch.Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar, got shape {tuple(sigma.shape)}")
        return sigma
    check_in_range("sigma", sigma, 0.0, math.inf, low_open=True, high_open=True)
    return float(sigma)


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) = -1/2 sum_i [log 2 pi + logvar_i + (z_i - mu_i)^2 / var_i].

    Summed over the last dimension: (..., D) -> (...). With mu = logvar = 0 it is the prior.
    """
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def mean_of(params: torch.Tensor, likelihood: str) -> torch.Tensor:
    """E[x | z] from decoder output: sigmoid(logits) (Bernoulli), or the mean itself (Gaussian)."""
    return torch.sigmoid(params) if likelihood == "bernoulli" else params


# ----------------------------------------------------------------------------------------------
# Encoders and decoders
# ----------------------------------------------------------------------------------------------

def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given sizes with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def _shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    """A shape as a tuple of positive ints."""
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not shape:
        raise ValueError(f"{name} must be a non-empty shape, got ()")
    for s in shape:
        check_positive_int(name, s)
    return shape


def _hidden(hidden: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(hidden)
    for h in hidden:
        check_positive_int("hidden", h)
    return hidden


def _check_batch(name: str, x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """x must be a float tensor of shape (B, *shape)."""
    check_tensor(name, x, floating=True)
    if tuple(x.shape[1:]) != shape or x.ndim != len(shape) + 1:
        raise ValueError(f"{name} must have shape (B, {', '.join(map(str, shape))}) for this model, "
                         f"got {tuple(x.shape)}")
    return x


class MLPEncoder(nn.Module):
    """q(z | x) = N(mu(x), diag(exp(logvar(x)))) with an MLP on the flattened x.

    forward: (B, *in_shape) -> mu (B, latent_dim), logvar (B, latent_dim). With ``hidden=()``
    it is linear. Used also for Gaussian conditionals between latents (the HVAE).
    """

    def __init__(self, in_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (512, 256)):
        super().__init__()
        self.in_shape = _shape("in_shape", in_shape)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.net = _mlp([math.prod(self.in_shape), *_hidden(hidden), 2 * latent_dim])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch("x", x, self.in_shape)
        mu, logvar = self.net(x.flatten(1)).chunk(2, dim=1)                 # (B, D) each
        return mu, logvar


class ConvEncoder(nn.Module):
    """q(z | x) for (B, 1, 28, 28) images: two stride-2 4x4 convolutions (28 -> 14 -> 7), then linear.

    forward: (B, 1, 28, 28) -> mu (B, latent_dim), logvar (B, latent_dim).
    """

    def __init__(self, latent_dim: int, channels: Sequence[int] = (32, 64)):
        super().__init__()
        self.in_shape = (1, 28, 28)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        c1, c2 = _channels(channels)
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 4, stride=2, padding=1), nn.SiLU(),              # (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.SiLU(),             # (B, c2, 7, 7)
            nn.Flatten(), nn.Linear(c2 * 7 * 7, 2 * latent_dim))              # (B, 2D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_batch("x", x, self.in_shape)
        mu, logvar = self.net(x).chunk(2, dim=1)
        return mu, logvar


def _channels(channels: Sequence[int]) -> tuple[int, int]:
    channels = tuple(channels)
    if len(channels) != 2:
        raise ValueError(f"channels must hold two ints, got {channels}")
    for c in channels:
        check_positive_int("channels", c)
    return channels


class MLPDecoder(nn.Module):
    """The parameters of p(x | z) (logits or mean) from an MLP: (B, latent_dim) -> (B, *out_shape)."""

    def __init__(self, latent_dim: int, out_shape: Sequence[int], hidden: Sequence[int] = (256, 512)):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.out_shape = _shape("out_shape", out_shape)
        self.net = _mlp([latent_dim, *_hidden(hidden), math.prod(self.out_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_batch("z", z, (self.latent_dim,))
        return self.net(z).unflatten(1, self.out_shape)                     # (B, *out_shape)


class ConvDecoder(nn.Module):
    """The parameters of p(x | z) for 28x28 images: linear to (c1, 7, 7), then two stride-2
    transposed convolutions (7 -> 14 -> 28): (B, latent_dim) -> (B, 1, 28, 28)."""

    def __init__(self, latent_dim: int, channels: Sequence[int] = (64, 32)):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.out_shape = (1, 28, 28)
        c1, c2 = _channels(channels)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, c1 * 7 * 7), nn.SiLU(), nn.Unflatten(1, (c1, 7, 7)),
            nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1), nn.SiLU(),    # (B, c2, 14, 14)
            nn.ConvTranspose2d(c2, 1, 4, stride=2, padding=1))                # (B, 1, 28, 28)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _check_batch("z", z, (self.latent_dim,))
        return self.net(z)


# ----------------------------------------------------------------------------------------------
# The VAE
# ----------------------------------------------------------------------------------------------

@dataclass
class NegELBO:
    """The negative ELBO of a VAE per example, split as in Luo Eq. 19; every field is (B,).

    total = reconstruction + beta * kl, where reconstruction = -log p(x | z), z ~ q(z | x)
    (one sample), and kl = KL(q(z | x) || p(z)) in closed form.
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """The batch mean of `total`: what `train.fit` minimises."""
        return self.total.mean()


class _LatentModel(nn.Module):
    """What VAE and HVAE share: the likelihood p(x | z), input checks, chunked IWAE."""

    def _init_likelihood(self, decoder: nn.Module, likelihood: str, sigma: float,
                         learn_sigma: bool) -> None:
        for attr in ("latent_dim", "out_shape"):
            if not hasattr(decoder, attr):
                raise TypeError(f"decoder must have a `{attr}` attribute (see MLPDecoder)")
        self.x_shape = tuple(decoder.out_shape)
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        _check_sigma(sigma)
        if not isinstance(learn_sigma, bool):
            raise TypeError(f"learn_sigma must be a bool, got {type(learn_sigma).__name__}")
        if learn_sigma and likelihood != "gaussian":
            raise ValueError("learn_sigma=True needs likelihood='gaussian' (sigma is its noise scale)")
        if learn_sigma:
            self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        else:
            self.register_buffer("log_sigma", torch.tensor(math.log(sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        """The Gaussian likelihood's standard deviation (unused by a Bernoulli likelihood)."""
        return self.log_sigma.exp()

    def check_x(self, x: torch.Tensor) -> torch.Tensor:
        """x must be a float tensor of shape (B, *x_shape)."""
        return _check_batch("x", x, self.x_shape)

    def log_px(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """log p(x | z) from the decoder output `params`: (B,)."""
        return log_likelihood(x, params, self.likelihood, self.sigma)

    def _chunked_iwae(self, x: torch.Tensor, K: int, chunk: int | None,
                      generator: torch.Generator | None) -> torch.Tensor:
        """iwae_from_log_weights of (B, K) log-weights drawn `chunk` samples at a time."""
        self.check_x(x)
        check_positive_int("K", K)
        if chunk is None:
            chunk = max(1, MAX_CHUNK_ROWS // x.shape[0])
        check_positive_int("chunk", chunk)
        log_w = [self.log_weights(x, min(chunk, K - k), generator) for k in range(0, K, chunk)]
        return iwae_from_log_weights(torch.cat(log_w, dim=1))                 # (B,)

    @torch.no_grad()
    def log_likelihood_estimate(self, x: torch.Tensor, K: int = 1000, chunk: int | None = None,
                                generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) ~ log 1/K sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x), in nats: (B,).

        Importance sampling with the encoder as proposal (Burda et al. 2016 evaluate with
        K = 5000); it is the IWAE bound L_K, a lower bound in expectation that tends to log p(x)
        as K grows. `chunk` samples are decoded per pass (default: about 8192 decoder rows).
        """
        return self._chunked_iwae(x, K, chunk, generator)

    def _prior_sample(self, n: int, dim: int, generator: torch.Generator | None) -> torch.Tensor:
        """n draws from N(0, I) in R^dim, with the dtype and device of the model's parameters."""
        like = self.log_sigma
        return torch.randn(n, dim, generator=generator, dtype=like.dtype).to(like.device)

    @torch.no_grad()
    def _decode_mean(self, params: torch.Tensor) -> torch.Tensor:
        return mean_of(params, self.likelihood)


class VAE(_LatentModel):
    """A VAE: p(z) = N(0, I), p(x | z) from `decoder`, q(z | x) = N(mu, diag var) from `encoder`.

    Args:
        encoder: x -> (mu, logvar), e.g. `MLPEncoder`, `ConvEncoder`.
        decoder: z -> logits ("bernoulli") or mean ("gaussian"), e.g. `MLPDecoder`, `ConvDecoder`.
        likelihood: "bernoulli" or "gaussian" (lecture chapter, Sec. 1.2.2).
        sigma: the Gaussian likelihood's standard deviation (its initial value if learned).
        learn_sigma: learn one scalar sigma with the networks (Gaussian likelihood only).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, likelihood: str = "bernoulli",
                 sigma: float = 1.0, learn_sigma: bool = False):
        super().__init__()
        self._init_likelihood(decoder, likelihood, sigma, learn_sigma)
        if getattr(encoder, "latent_dim", decoder.latent_dim) != decoder.latent_dim:
            raise ValueError(f"encoder.latent_dim ({encoder.latent_dim}) and decoder.latent_dim "
                             f"({decoder.latent_dim}) differ")
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = decoder.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters (mu, logvar) of q(z | x) (Luo Eq. 20), each (B, D)."""
        return self.encoder(self.check_x(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The parameters of p(x | z): logits or mean, (B, *x_shape)."""
        return self.decoder(z)

    def neg_elbo(self, x: torch.Tensor, beta: float = 1.0,
                 generator: torch.Generator | None = None) -> NegELBO:
        """-ELBO = -E_q[log p(x | z)] + beta KL(q(z | x) || p(z)), per example (B,).

        Luo Eq. 19 (beta = 1): the reconstruction term is estimated with one reparameterised
        sample z = mu + sigma * eps (Luo Eq. 22 with L = 1), the prior-matching term is the
        closed-form KL to N(0, I) (lecture chapter, Eq. 1.2). beta != 1 is the beta-VAE
        weighting (Higgins et al. 2017); only beta = 1 gives a bound on log p(x).
        """
        check_in_range("beta", beta, 0.0, math.inf, high_open=True)
        mu, logvar = self.encode(x)                                           # (B, D) each
        z = reparameterize(mu, logvar, generator=generator)                   # (B, D)
        reconstruction = -self.log_px(x, self.decode(z))                      # (B,)
        kl = gaussian_kl(mu, logvar)                                          # (B,)
        return NegELBO(reconstruction + beta * kl, reconstruction, kl)

    def forward(self, x: torch.Tensor) -> NegELBO:
        """`neg_elbo(x)`."""
        return self.neg_elbo(x)

    def log_weights(self, x: torch.Tensor, K: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x), z_k ~ q(z | x): (B, K)."""
        self.check_x(x)
        check_positive_int("K", K)
        B = x.shape[0]
        mu, logvar = self.encode(x)                                           # (B, D)
        eps = torch.randn((K, *mu.shape), generator=generator, dtype=mu.dtype).to(mu.device)
        z = reparameterize(mu, logvar, eps=eps)                               # (K, B, D)
        params = self.decode(z.flatten(0, 1))                                 # (K*B, *x_shape)
        x_rep = x.expand(K, *x.shape).flatten(0, 1)                           # (K*B, *x_shape)
        log_px = self.log_px(x_rep, params).view(K, B)                        # (K, B)
        log_pz = log_normal_diag(z, torch.zeros_like(z), torch.zeros_like(z)) # (K, B)
        log_qz = log_normal_diag(z, mu, logvar)                               # (K, B)
        return (log_px + log_pz - log_qz).T                                   # (B, K)

    def iwae_bound(self, x: torch.Tensor, K: int = 10, chunk: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """One draw of the importance-weighted bound L_K (Burda et al. 2016, Eq. 8) per example (B,).

        L_1 is an unbiased estimate of the ELBO; E[L_K] increases with K towards log p(x).
        Differentiable (IWAE training); `chunk` samples are decoded per pass.
        """
        return self._chunked_iwae(x, K, chunk, generator)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """E[x | z] for n draws z ~ p(z) = N(0, I): (n, *x_shape).

        Returns the decoder's mean image, not a draw from p(x | z): for a Bernoulli likelihood
        the pixel probabilities sigmoid(logits) (a binary draw would look speckled), for a
        Gaussian likelihood the mean mu(z) (the noise sigma * eps is left out).
        """
        check_positive_int("n", n)
        z = self._prior_sample(n, self.latent_dim, generator)                # (n, D)
        return self._decode_mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z = mu(x)]: decode the encoder mean (no sampling), shaped like x."""
        mu, _ = self.encode(x)
        return self._decode_mean(self.decode(mu))

    @torch.no_grad()
    def kl_per_dimension(self, x: torch.Tensor) -> torch.Tensor:
        """KL(q(z_j | x) || N(0, 1)) for each latent dimension j: (B, D); sums to `neg_elbo().kl`.

        A dimension whose KL is near 0 for every x carries no information about x (posterior
        collapse; lecture chapter, Sec. 1.2.4).
        """
        mu, logvar = self.encode(x)
        return gaussian_kl(mu[..., None], logvar[..., None])                  # (B, D)


@torch.no_grad()
def latent_activity(model: VAE, x: torch.Tensor) -> torch.Tensor:
    """A_j = Cov_x(E_q[z_j | x]): the variance over the data of each encoder mean, (D,).

    The activity statistic of Burda et al. (2016).
    """
    if not isinstance(model, VAE):
        raise TypeError(f"model must be a VAE, got {type(model).__name__}")
    mu, _ = model.encode(x)                                                   # (N, D)
    if mu.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 examples, got {mu.shape[0]}")
    return mu.var(dim=0)


def active_units(model: VAE, x: torch.Tensor, threshold: float = 0.01) -> int:
    """The number of latent dimensions with activity A_j > threshold (Burda et al. 2016).

    Burda et al. use threshold 0.01. An inactive dimension's encoder mean ignores x; its
    posterior then stays close to the prior (posterior collapse).
    """
    check_in_range("threshold", threshold, 0.0, math.inf, high_open=True)
    return int((latent_activity(model, x) > threshold).sum())


# ----------------------------------------------------------------------------------------------
# The deterministic autoencoder
# ----------------------------------------------------------------------------------------------

class AutoEncoder(nn.Module):
    """x_hat = D(E(x)) trained on ||x - x_hat||^2 (lecture chapter, Sec. 1.1).

    Built from the VAE's MLP pieces; `encode` returns only the code (the encoder's mu head).
    ``linear=True`` drops the hidden layers (and so every nonlinearity): E(x) = A x + a,
    D(z) = C z + c. Trained to its optimum, the decoder's columns span the top-`latent_dim`
    principal subspace of the data (Baldi & Hornik 1989; chapter, Sec. 1.1), not necessarily
    the principal axes themselves.
    """

    def __init__(self, in_shape: Sequence[int], latent_dim: int, hidden: Sequence[int] = (512, 256),
                 linear: bool = False):
        super().__init__()
        if not isinstance(linear, bool):
            raise TypeError(f"linear must be a bool, got {type(linear).__name__}")
        hidden = () if linear else tuple(hidden)
        self.encoder = MLPEncoder(in_shape, latent_dim, hidden)                # mu head used
        self.decoder = MLPDecoder(latent_dim, in_shape, hidden[::-1])
        self.x_shape, self.latent_dim, self.linear = self.encoder.in_shape, latent_dim, linear

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = E(x): (B, latent_dim)."""
        return self.encoder(_check_batch("x", x, self.x_shape))[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat = D(z): (B, *x_shape)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction D(E(x))."""
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """||x - D(E(x))||^2 per example, summed over the non-batch dims: (B,)."""
        return (x - self(x)).pow(2).flatten(1).sum(1)


# ----------------------------------------------------------------------------------------------
# The two-level Markovian hierarchical VAE
# ----------------------------------------------------------------------------------------------

@dataclass
class HNegELBO:
    """The negative ELBO of the two-level HVAE per example, every field (B,) (Luo Eq. 29, T = 2).

    total = reconstruction + kl_bottom + kl_top, with z1 ~ q(z1 | x), z2 ~ q(z2 | z1):
    reconstruction = -log p(x | z1); kl_bottom = log q(z1 | x) - log p(z1 | z2) (one-sample
    estimate); kl_top = KL(q(z2 | z1) || p(z2)) in closed form given the sampled z1.
    """

    total: torch.Tensor
    reconstruction: torch.Tensor
    kl_top: torch.Tensor
    kl_bottom: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """The batch mean of `total`."""
        return self.total.mean()


class HVAE(_LatentModel):
    """A Markovian HVAE with two latents (Luo Eq. 23-24, T = 2).

    generation   p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1),  p(z2) = N(0, I),
                 p(z1 | z2) = N(mu(z2), diag exp(logvar(z2))), p(x | z1) from `p_x`;
    inference    q(z1, z2 | x) = q(z1 | x) q(z2 | z1), both diagonal Gaussians.

    Args:
        q_z1: x -> (mu, logvar) of q(z1 | x), e.g. ``MLPEncoder(x_shape, z1_dim)``.
        q_z2: z1 -> (mu, logvar) of q(z2 | z1), e.g. ``MLPEncoder((z1_dim,), z2_dim)``.
        p_z1: z2 -> (mu, logvar) of p(z1 | z2), e.g. ``MLPEncoder((z2_dim,), z1_dim)``.
        p_x: z1 -> logits or mean of p(x | z1), e.g. ``MLPDecoder(z1_dim, x_shape)``.
        likelihood, sigma, learn_sigma: as for `VAE`.
    """

    def __init__(self, q_z1: nn.Module, q_z2: nn.Module, p_z1: nn.Module, p_x: nn.Module,
                 likelihood: str = "bernoulli", sigma: float = 1.0, learn_sigma: bool = False):
        super().__init__()
        self._init_likelihood(p_x, likelihood, sigma, learn_sigma)
        for name, net in (("q_z1", q_z1), ("q_z2", q_z2), ("p_z1", p_z1)):
            if not hasattr(net, "latent_dim"):
                raise TypeError(f"{name} must have a `latent_dim` attribute (see MLPEncoder)")
        self.z1_dim, self.z2_dim = p_x.latent_dim, q_z2.latent_dim
        if q_z1.latent_dim != self.z1_dim or p_z1.latent_dim != self.z1_dim:
            raise ValueError(f"q_z1, p_z1 and p_x must share z1_dim, got {q_z1.latent_dim}, "
                             f"{p_z1.latent_dim} and {self.z1_dim}")
        self.q_z1, self.q_z2, self.p_z1, self.p_x = q_z1, q_z2, p_z1, p_x

    def _latents(self, mu1: torch.Tensor, logvar1: torch.Tensor,
                 generator: torch.Generator | None):
        """z1 ~ q(z1 | x) = N(mu1, var1), z2 ~ q(z2 | z1), and the parameters of q(z2 | z1), p(z1 | z2)."""
        z1 = reparameterize(mu1, logvar1, generator=generator)                # (B, z1_dim)
        mu2, logvar2 = self.q_z2(z1)                                          # (B, z2_dim)
        z2 = reparameterize(mu2, logvar2, generator=generator)
        mu1_p, logvar1_p = self.p_z1(z2)                                      # (B, z1_dim)
        return z1, z2, (mu2, logvar2), (mu1_p, logvar1_p)

    def neg_elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> HNegELBO:
        """-ELBO of Luo Eq. 29 (T = 2), one sample (z1, z2) ~ q(z1, z2 | x) per example.

        -ELBO = E_q[-log p(x | z1)] + E_q[log q(z1 | x) - log p(z1 | z2)]
                + E_q(z1|x)[KL(q(z2 | z1) || p(z2))];
        the last expectation's inner KL is exact (lecture chapter, Eq. 1.2).
        """
        mu1, logvar1 = self.q_z1(self.check_x(x))                             # (B, z1_dim)
        z1, z2, (mu2, logvar2), (mu1_p, logvar1_p) = self._latents(mu1, logvar1, generator)
        reconstruction = -self.log_px(x, self.p_x(z1))                        # (B,)
        kl_bottom = log_normal_diag(z1, mu1, logvar1) - log_normal_diag(z1, mu1_p, logvar1_p)
        kl_top = gaussian_kl(mu2, logvar2)                                    # (B,)
        return HNegELBO(reconstruction + kl_bottom + kl_top, reconstruction, kl_top, kl_bottom)

    def forward(self, x: torch.Tensor) -> HNegELBO:
        """`neg_elbo(x)`."""
        return self.neg_elbo(x)

    def log_weights(self, x: torch.Tensor, K: int,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """log w_k = log p(x, z1_k, z2_k) - log q(z1_k, z2_k | x), (z1_k, z2_k) ~ q: (B, K)."""
        self.check_x(x)
        check_positive_int("K", K)
        B = x.shape[0]
        mu1, logvar1 = (h.repeat(K, 1) for h in self.q_z1(x))                 # (K*B, z1_dim)
        z1, z2, (mu2, logvar2), (mu1_p, logvar1_p) = self._latents(mu1, logvar1, generator)
        x_rep = x.expand(K, *x.shape).flatten(0, 1)                           # (K*B, *x_shape)
        log_p = (self.log_px(x_rep, self.p_x(z1)) + log_normal_diag(z1, mu1_p, logvar1_p)
                 + log_normal_diag(z2, torch.zeros_like(z2), torch.zeros_like(z2)))
        log_q = log_normal_diag(z1, mu1, logvar1) + log_normal_diag(z2, mu2, logvar2)
        return (log_p - log_q).view(K, B).T                                   # (B, K)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """E[x | z1] for z2 ~ p(z2), z1 ~ p(z1 | z2) (ancestral sampling): (n, *x_shape).

        As for `VAE.sample`, the last step returns the mean image (Bernoulli: probabilities).
        """
        check_positive_int("n", n)
        z2 = self._prior_sample(n, self.z2_dim, generator)                    # (n, z2_dim)
        mu1, logvar1 = self.p_z1(z2)
        z1 = reparameterize(mu1, logvar1, generator=generator)
        return self._decode_mean(self.p_x(z1))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z1 = mean of q(z1 | x)], shaped like x."""
        mu1, _ = self.q_z1(self.check_x(x))
        return self._decode_mean(self.p_x(mu1))


# ----------------------------------------------------------------------------------------------
# Factories
# ----------------------------------------------------------------------------------------------

def mnist_vae(latent_dim: int = 16, kind: str = "mlp", likelihood: str = "bernoulli",
              sigma: float = 0.1, hidden: Sequence[int] = (512, 256),
              channels: Sequence[int] = (32, 64)) -> VAE:
    """A VAE for (B, 1, 28, 28) MNIST digits in [0, 1].

    kind "mlp": `MLPEncoder` with `hidden`, `MLPDecoder` with reversed `hidden`; "conv":
    `ConvEncoder` with `channels`, `ConvDecoder` with reversed `channels`. `sigma` is the fixed
    pixel noise of a Gaussian likelihood (ignored for Bernoulli).
    """
    check_choice("kind", kind, ("mlp", "conv"))
    check_choice("likelihood", likelihood, LIKELIHOODS)
    if kind == "mlp":
        encoder = MLPEncoder(MNIST_SHAPE, latent_dim, hidden)
        decoder = MLPDecoder(latent_dim, MNIST_SHAPE, tuple(hidden)[::-1])
    else:
        encoder = ConvEncoder(latent_dim, channels)
        decoder = ConvDecoder(latent_dim, tuple(channels)[::-1])
    return VAE(encoder, decoder, likelihood, sigma=sigma)


def toy_vae(latent_dim: int = 2, hidden: int = 128, sigma: float = 0.5,
            learn_sigma: bool = True) -> VAE:
    """A VAE for (B, 2) points: two hidden layers of width `hidden` each way, Gaussian p(x | z).

    sigma is the Gaussian decoder's standard deviation, learned from the initial value `sigma`
    unless ``learn_sigma=False`` (with a fixed sigma comparable to the data's spread, the KL term
    wins and the latents collapse).
    """
    check_positive_int("hidden", hidden)
    return VAE(MLPEncoder((2,), latent_dim, (hidden, hidden)),
               MLPDecoder(latent_dim, (2,), (hidden, hidden)),
               "gaussian", sigma=sigma, learn_sigma=learn_sigma)


def mnist_hvae(z1_dim: int = 32, z2_dim: int = 8, hidden: Sequence[int] = (512, 256),
               hidden_z: Sequence[int] = (128,), likelihood: str = "bernoulli",
               sigma: float = 0.1) -> HVAE:
    """A two-level HVAE for MNIST: MLPs of `hidden` between x and z1, of `hidden_z` between z1 and z2."""
    hidden, hidden_z = tuple(hidden), tuple(hidden_z)
    return HVAE(q_z1=MLPEncoder(MNIST_SHAPE, z1_dim, hidden),
                q_z2=MLPEncoder((z1_dim,), z2_dim, hidden_z),
                p_z1=MLPEncoder((z2_dim,), z1_dim, hidden_z[::-1]),
                p_x=MLPDecoder(z1_dim, MNIST_SHAPE, hidden[::-1]),
                likelihood=likelihood, sigma=sigma)
