"""course_lib.continuous against closed forms: the VP SDE's alpha-bar, finite-difference slopes,
the x- and eps-forms of the continuous ELBO, and the exact continuous ELBO of Gaussian data,
which does not depend on the schedule between its endpoints (Kingma et al. 2021, Sec. 5.1)."""
import math

import pytest
import torch

from course_lib import continuous as C
from course_lib.sde import VPSDE

F64 = torch.float64


def test_vp_log_snr_matches_the_sde_alpha_bar():
    t = torch.linspace(0.01, 1, 50, dtype=F64)
    torch.testing.assert_close(torch.sigmoid(C.linear_log_snr_vp()(t)), VPSDE().alpha_bar(t))


def test_cosine_log_snr_endpoints_and_slope_by_finite_differences():
    f = C.cosine_log_snr(-12.0, 9.0)
    ends = f(torch.tensor([0.0, 1.0], dtype=F64))
    torch.testing.assert_close(ends, torch.tensor([9.0, -12.0], dtype=F64))
    t = torch.tensor([0.1, 0.4, 0.8], dtype=F64)
    lam, slope = C.log_snr_and_slope(f, t)
    h = 1e-6
    torch.testing.assert_close(slope, (f(t + h) - f(t - h)) / (2 * h), rtol=1e-6, atol=1e-6)
    assert (slope < 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_monotone_log_snr_is_decreasing_with_fixed_endpoints_for_any_parameters(seed):
    torch.manual_seed(seed)
    sched = C.MonotoneLogSNR(-8.0, 6.0, hidden=16).double()
    with torch.no_grad():
        for p in sched.parameters():
            p.add_(3 * torch.randn_like(p))
    t = torch.linspace(0, 1, 201, dtype=F64)
    lam = sched(t)
    assert lam[0].item() == pytest.approx(6.0) and lam[-1].item() == pytest.approx(-8.0)
    assert (lam.diff() < 0).all()
    lam.sum().backward()
    assert all(p.grad is not None for p in sched.parameters())


def test_the_eps_form_equals_the_x_form_pointwise():
    """1/2 (-lambda') ||eps - eps_hat||^2 = 1/2 (-SNR') ||x_0 - x0_hat||^2 (Kingma et al. 2021, Eq. 17)."""
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64)
    f = C.cosine_log_snr()
    model = lambda xt, ts: torch.tanh(xt) * 0.5                     # any eps predictor
    loss = C.weighted_loss_per_example(model, x0, f, t=t, eps=eps)
    lam, slope = C.log_snr_and_slope(f, t)
    a, s = C.alpha_sigma(lam)
    xt = a[:, None] * x0 + s[:, None] * eps
    x0_hat = (xt - s[:, None] * model(xt, None)) / a[:, None]
    snr_slope = lam.exp() * slope                                   # d SNR / dt
    torch.testing.assert_close(loss, 0.5 * -snr_slope * (x0 - x0_hat).pow(2).sum(1))


def _optimal_eps(log_snr_fn, v):
    """E[eps | x_t] for data N(0, v I): s x_t / (a^2 v + s^2)."""
    def model(xt, ts):
        a, s = C.alpha_sigma(log_snr_fn(ts / 1000))
        return (s / (a**2 * v + s**2))[:, None] * xt
    return model


def test_continuous_elbo_of_gaussian_data_is_exact_and_schedule_invariant(one_thread):
    """With the optimal denoiser, L_inf = D/2 [log(1 + v SNR)] from SNR_min to SNR_max."""
    v, D, N = 0.5, 2, 200_000
    lmin, lmax = -8.0, 6.0
    exact = D / 2 * (math.log1p(v * math.exp(lmax)) - math.log1p(v * math.exp(lmin)))
    torch.manual_seed(0)
    learned = C.MonotoneLogSNR(lmin, lmax, hidden=8).double()
    g = torch.Generator().manual_seed(4)
    x0 = math.sqrt(v) * torch.randn(N, D, generator=g, dtype=F64)
    for f in (C.cosine_log_snr(lmin, lmax), learned):
        loss = C.weighted_loss_per_example(_optimal_eps(f, v), x0, f, generator=g).detach()
        se = loss.std().item() / math.sqrt(N)
        assert abs(loss.mean().item() - exact) < 4 * se + 1e-3, (loss.mean().item(), exact, se)


def test_weightings():
    lam, slope = torch.tensor([-2.0, 0.0, 3.0]), torch.tensor([-4.0, -2.0, -1.0])
    torch.testing.assert_close(C.weight("elbo", lam, slope), torch.ones(3))
    torch.testing.assert_close(C.weight("simple", lam, slope) * -slope, torch.ones(3))
    torch.testing.assert_close(C.weight("sigmoid", lam, slope, bias=1.0), torch.sigmoid(1.0 - lam))
    with pytest.raises(ValueError, match="weighting"):
        C.weight("uniform", lam, slope)


def test_learn_schedule_passes_gradients_to_the_schedule():
    torch.manual_seed(0)
    sched = C.MonotoneLogSNR(hidden=8)
    x0 = torch.randn(32, 2)
    loss = C.weighted_loss_per_example(lambda xt, ts: 0.3 * xt, x0, sched, learn_schedule=True)
    loss.pow(2).mean().backward()                 # VDM learns the schedule by the loss variance
    assert sched.w2.grad is not None and sched.w2.grad.abs().sum() > 0
