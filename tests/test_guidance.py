"""course_lib.guidance against closed forms: the softmax gradient of a linear classifier, the
oracle mixture's exact class-conditional score (Bayes' rule behind classifier guidance), and the
classifier-free combination; plus the classifier networks' shapes."""
import math

import pytest
import torch

from course_lib import guidance
from course_lib.data.mixture import GaussianMixture, make_mixture
from course_lib.diffusion import eps_fn_from_score_fn
from course_lib.nets import MLP, ConvClassifier
from course_lib.schedules import linear_schedule

F64 = torch.float64
S = linear_schedule(200)


def test_drop_labels_uses_the_null_label_at_rate_p():
    y = torch.randint(0, 10, (20_000,), generator=torch.Generator().manual_seed(0))
    out = guidance.drop_labels(y, 0.2, generator=torch.Generator().manual_seed(1))
    rate = (out == -1).double().mean().item()
    assert abs(rate - 0.2) < 4 * math.sqrt(0.16 / 20_000)
    assert torch.equal(out[out != -1], y[out != -1])
    assert torch.equal(guidance.drop_labels(y, 0.0), y)
    with pytest.raises(ValueError, match="p_uncond"):
        guidance.drop_labels(y, 1.5)


class Linear:
    """logits = W x + b, ignoring t."""

    def __init__(self, W, b):
        self.W, self.b = W, b

    def __call__(self, x, t):
        return x @ self.W.T + self.b


def test_classifier_gradient_of_a_linear_softmax_is_w_y_minus_the_expected_row():
    g = torch.Generator().manual_seed(2)
    W, b = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(4, generator=g, dtype=F64)
    x, y = torch.randn(6, 3, generator=g, dtype=F64), torch.tensor([0, 1, 2, 3, 0, 1])
    grad = guidance.classifier_log_prob_grad(Linear(W, b), x, torch.ones(6), y)
    p = torch.softmax(x @ W.T + b, dim=1)                         # (6, 4)
    torch.testing.assert_close(grad, W[y] - p @ W)


class OracleClassifier:
    """p(k | x_t) of the noised mixture: the exact noise-aware classifier."""

    def __init__(self, mix, schedule):
        self.mix, self.schedule = mix, schedule

    def __call__(self, x, t):
        return self.mix.component_log_prob(x, self.schedule.alpha_bars[t.long()].to(x.dtype))


def test_classifier_guidance_with_gamma_1_is_the_exact_class_conditional_eps():
    """grad log q_t(x) + grad log p(y | x_t) = grad log q_t(x | y) (Bayes, Luo Eq. 165)."""
    mix = make_mixture("three_unequal").to(dtype=F64)
    score = lambda x, t: mix.marginal_score(x, S.alpha_bars[t].to(x.dtype))
    eps_fn = eps_fn_from_score_fn(score, S)
    x, t = torch.randn(9, 2, dtype=F64), torch.randint(1, 201, (9,))
    for y in range(3):
        component = GaussianMixture(torch.ones(1, dtype=F64), mix.means[y:y + 1], mix.covs[y:y + 1])
        cond = eps_fn_from_score_fn(lambda x, t: component.marginal_score(x, S.alpha_bars[t].to(x.dtype)), S)
        guided = guidance.classifier_guided_eps_fn(eps_fn, OracleClassifier(mix, S), y, 1.0, S)
        torch.testing.assert_close(guided(x, t), cond(x, t))
        unguided = guidance.classifier_guided_eps_fn(eps_fn, OracleClassifier(mix, S), y, 0.0, S)
        torch.testing.assert_close(unguided(x, t), eps_fn(x, t))


class LabelledNet(torch.nn.Module):
    """eps = x * (label + 2), with the null label -1 giving x."""

    def forward(self, x, t, y):
        return x * (y.to(x.dtype) + 2)[:, None]


def test_classifier_free_guidance_mixes_the_two_predictions():
    x, t = torch.randn(5, 2), torch.randint(1, 201, (5,))
    for gamma in (0.0, 1.0, 3.0):
        out = guidance.cfg_eps_fn(LabelledNet(), S, 2, gamma)(x, t)
        torch.testing.assert_close(out, x + gamma * (4 * x - x))       # eps_u + gamma (eps_c - eps_u)
    torch.testing.assert_close(guidance.cfg_combine(torch.ones(3), torch.zeros(3), 0.25),
                               torch.full((3,), 0.25))
    with pytest.raises(ValueError, match="gamma"):
        guidance.cfg_eps_fn(LabelledNet(), S, 2, -1.0)


def test_noisy_classifier_loss_trains_a_time_conditioned_mlp(one_thread):
    torch.manual_seed(0)
    mix = make_mixture("three_unequal")
    clf = MLP(dim=2, hidden=32, depth=2, out_dim=3)
    opt = torch.optim.Adam(clf.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(150):
        x, y = mix.sample(256, generator=g, return_labels=True)
        loss = guidance.noisy_classifier_loss(clf, x, y, S, generator=g)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.8 * math.log(3)         # better than chance on average over t


def test_conv_classifier_shapes_and_time_conditioning():
    x = torch.randn(3, 1, 28, 28)
    clf = ConvClassifier(channels=8, hidden=16)
    assert clf(x).shape == (3, 10) and clf.features(x).shape == (3, 16)
    noisy = ConvClassifier(channels=8, hidden=16, time_conditioned=True)
    assert noisy(x, torch.tensor([1.0, 5.0, 9.0])).shape == (3, 10)
    with pytest.raises(ValueError, match="t"):
        noisy(x)
    assert MLP(dim=2, out_dim=5)(torch.randn(4, 2), 3).shape == (4, 5)
