"""course_lib.score against closed forms and independent computations: the exact stationary law
of the discretised Langevin chain, Vincent's DSM identity, Hyvarinen's integration by parts, and
the oracle mixture's exact blurred scores (annealed Langevin recovering the mixing weights)."""
import math

import pytest
import torch

from course_lib.data.mixture import make_mixture
from course_lib.nets import MLP
from course_lib.score import (NoiseConditionalScore, annealed_langevin, dsm_loss_per_example,
                              fisher_divergence, geometric_sigmas, implicit_score_matching_loss,
                              langevin, langevin_step, ncsn_loss)

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_langevin_step_is_the_update_of_luo_eq_158():
    x, s, z = torch.randn(3, 2), torch.randn(3, 2), torch.randn(3, 2)
    torch.testing.assert_close(langevin_step(x, s, 0.02, z), x + 0.02 * s + math.sqrt(0.04) * z)
    torch.testing.assert_close(langevin_step(x, s, 0.02), x + 0.02 * s)
    with pytest.raises(ValueError, match="step_size"):
        langevin_step(x, s, 0.0)


def test_langevin_on_a_gaussian_reaches_the_exact_stationary_law_of_the_chain(one_thread):
    """For p = N(m, v) the chain x' = x + c (m - x) / v + sqrt(2c) z is linear; its stationary
    variance is v / (1 - c / (2 v)) (solve Var = (1 - c/v)^2 Var + 2c), its mean m."""
    m, v, c, M = 1.0, 0.5, 0.1, 40_000
    x = langevin(lambda x: (m - x) / v, torch.zeros(M, 1, dtype=F64), c, 200, generator=gen(0))
    var = v / (1 - c / (2 * v))
    assert abs(x.mean() - m) < 4 * math.sqrt(var / M)
    assert abs(x.var() / var - 1) < 4 * math.sqrt(2 / M)
    assert abs(x.var() / v - 1) > 0.05                        # the discretisation bias is real
    x = langevin(lambda x: (m - x) / v, torch.zeros(5, 1, dtype=F64), c, 200, noise=False)
    torch.testing.assert_close(x, torch.full((5, 1), m, dtype=F64))   # noise off: to the mode


def _weights(x, mix):
    k = mix.responsibilities(x).argmax(1)
    return torch.bincount(k, minlength=mix.n_components).double() / len(x)


def test_plain_langevin_loses_the_mixing_weights_and_annealed_langevin_recovers_them(one_thread):
    mix = make_mixture("three_unequal").to(dtype=F64)
    N = 4000
    x_init = (torch.rand(N, 2, generator=gen(1), dtype=F64) - 0.5) * 8       # uniform on a box
    plain = langevin(mix.score, x_init, 1e-3, 200, generator=gen(2))
    se = math.sqrt(0.25 / N)
    assert (_weights(plain, mix) - mix.weights).abs().max() > 0.05          # basins, not weights
    sigmas = geometric_sigmas(3.0, 0.05, 10)
    blurred = {float(s): mix.convolved(float(s)) for s in sigmas}
    score = lambda x, s: blurred[float(s[0])].score(x)
    x = annealed_langevin(score, x_init, sigmas, 40, eps=2e-4, generator=gen(3))
    assert (_weights(x, mix) - mix.weights).abs().max() < 0.02 + 3 * se


def test_annealed_langevin_checks_the_sigma_order_and_returns_a_trajectory():
    score = lambda x, s: -x / (1 + s[:, None] ** 2)
    x, path = annealed_langevin(score, torch.zeros(4, 2), torch.tensor([1.0, 0.5]), 3,
                                return_trajectory=True, generator=gen(0))
    assert path.shape == (7, 4, 2)
    with pytest.raises(ValueError, match="decreasing"):
        annealed_langevin(score, torch.zeros(4, 2), torch.tensor([0.5, 1.0]), 3)


def test_geometric_sigmas():
    s = geometric_sigmas(10.0, 0.01, 7)
    assert s[0].item() == pytest.approx(10) and s[-1].item() == pytest.approx(0.01)
    torch.testing.assert_close(s[1:] / s[:-1], torch.full((6,), 0.1 ** 0.5, dtype=F64))
    with pytest.raises(ValueError, match="sigma_max"):
        geometric_sigmas(0.01, 0.1, 3)


def test_dsm_loss_is_the_formula_and_vincents_identity_holds(one_thread):
    """E[dsm(s)] - E[dsm(s*)] = sigma^2 / 2 E||s - s*||^2 at x~ (Vincent 2011), s* the blurred score."""
    x, z = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    fn = lambda y, s: -y * 2.0
    out = dsm_loss_per_example(fn, x, 0.3, z=z)
    torch.testing.assert_close(out, 0.5 * ((0.3 * -2 * (x + 0.3 * z) + z) ** 2).sum(1))

    mix, sigma, M = make_mixture("three_unequal").to(dtype=F64), 0.4, 200_000
    blurred = mix.convolved(sigma)
    true = lambda y, s: blurred.score(y)
    wrong = lambda y, s: blurred.score(y) + 0.3 * torch.tanh(y)
    x0 = mix.sample(M, generator=gen(5))
    z = torch.randn(M, 2, generator=gen(6), dtype=F64)
    diff = dsm_loss_per_example(wrong, x0, sigma, z=z) - dsm_loss_per_example(true, x0, sigma, z=z)
    x_noisy = x0 + sigma * z
    gap = 0.5 * sigma**2 * (0.3 * torch.tanh(x_noisy)).pow(2).sum(1)
    assert abs(diff.mean() - gap.mean()) < 4 * (diff - gap).std() / math.sqrt(M)
    with pytest.raises(ValueError, match="sigma"):
        dsm_loss_per_example(fn, x, torch.ones(3))


def test_ncsn_loss_draws_one_level_per_example():
    x = torch.randn(64, 2)
    seen = []
    def fn(y, s):
        seen.append(s.clone())
        return -y
    loss = ncsn_loss(fn, x, torch.tensor([1.0, 0.1]), generator=gen(0))
    assert loss.ndim == 0 and sorted(set(seen[0].tolist())) == pytest.approx([0.1, 1.0])


def test_implicit_score_matching_closed_form_and_fisher_divergence_up_to_a_constant():
    # data N(0, 1), s(x) = -a x:  J = -a + a^2 x^2 / 2, E J = -a + a^2 / 2 (minimum at a = 1)
    x = torch.randn(7, 1, dtype=F64)
    for a in (0.5, 1.0, 2.0):
        torch.testing.assert_close(implicit_score_matching_loss(lambda y: -a * y, x),
                                   -a + 0.5 * a**2 * x[:, 0] ** 2)
    # ISM - Fisher = const (independent of s), by Monte Carlo on the 2-D mixture
    mix, M = make_mixture("three_unequal").to(dtype=F64), 100_000
    x = mix.sample(M, generator=gen(7))
    consts = []
    for f in (lambda y: -y, lambda y: mix.score(y) + 0.5 * torch.sin(y)):
        d = implicit_score_matching_loss(f, x).detach() - fisher_divergence(f, mix.score, x)
        consts.append((d.mean(), d.std() / math.sqrt(M)))
    (c1, se1), (c2, se2) = consts
    assert abs(c1 - c2) < 4 * math.hypot(se1, se2)


def test_noise_conditional_score_divides_by_sigma():
    torch.manual_seed(0)
    net = MLP(dim=2, hidden=16, depth=1)
    model = NoiseConditionalScore(net)
    x, s = torch.randn(4, 2), torch.tensor([0.1, 0.5, 1.0, 2.0])
    torch.testing.assert_close(model(x, s), net(x, 250 * s.log()) / s[:, None])
    assert model(x, 0.5).shape == (4, 2)
