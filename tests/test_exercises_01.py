"""Notebook 01's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import math

import pytest
import torch

from course_lib.elbo import log_normal
from course_lib.exercises.elbo import reference_elbo_mc, reference_iwae_bound, reference_posterior
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


@pytest.mark.parametrize("ex_id, reference", [("01.elbo_mc", reference_elbo_mc),
                                              ("01.posterior", reference_posterior),
                                              ("01.iwae", reference_iwae_bound)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


# ------------------------------------------------------------------ 01.elbo_mc
def test_elbo_mc_with_torch_distributions_is_a_correct_answer():
    def with_normal(log_joint, q_mean, q_std, eps):
        q = torch.distributions.Normal(q_mean, q_std)
        z = q_mean + q_std * eps
        return (log_joint(z) - q.log_prob(z)).mean(0)
    result = grade("01.elbo_mc", with_normal)
    assert result.status == "passed", str(result)


def test_elbo_mc_without_the_entropy_term_is_explained():
    result = grade("01.elbo_mc", lambda lj, m, sd, eps: lj(m + sd * eps).mean(0))
    assert "subtract log q(z)" in str(result)
    assert {"value", "unbiased"} <= failed_kinds(result) and "shape" not in failed_kinds(result)


def test_elbo_mc_with_std_used_as_variance_is_explained():
    def as_variance(lj, m, sd, eps):
        z = m + sd.sqrt() * eps
        return (lj(z) - log_normal(z, m, sd)).mean(0)
    result = grade("01.elbo_mc", as_variance)
    assert "standard deviation" in str(result) and result.status == "partial"


def test_elbo_mc_that_detaches_the_samples_loses_the_gradient_point():
    def detached(lj, m, sd, eps):
        return reference_elbo_mc(lj, m.detach(), sd.detach(), eps)
    result = grade("01.elbo_mc", detached)
    assert failed_kinds(result) == {"gradient"}, str(result)


def test_elbo_mc_averaged_over_everything_fails_shape_and_value():
    result = grade("01.elbo_mc", lambda lj, m, sd, eps: reference_elbo_mc(lj, m, sd, eps).mean())
    assert {"shape", "value", "batching"} <= failed_kinds(result)


# ---------------------------------------------------------------- 01.posterior
def test_posterior_with_a_scalar_variance_loses_only_the_shape_point():
    def scalar_var(x, w, b, s):
        return w * (x - b) / (w ** 2 + s ** 2), s ** 2 / (w ** 2 + s ** 2)
    result = grade("01.posterior", scalar_var)
    assert failed_kinds(result) == {"shape"}, str(result)


def test_posterior_mean_without_the_prior_is_explained():
    def mle(x, w, b, s):
        return (x - b) / w, torch.full_like(x, s ** 2 / w ** 2)
    result = grade("01.posterior", mle)
    assert "ignores the prior" in str(result) and "value" in failed_kinds(result)


def test_posterior_returning_the_standard_deviation_is_explained():
    def std(x, w, b, s):
        mean, var = reference_posterior(x, w, b, s)
        return mean, var.sqrt()
    result = grade("01.posterior", std)
    assert "standard deviation" in str(result) and result.status == "partial"


# --------------------------------------------------------------------- 01.iwae
def test_naive_log_mean_exp_underflows_and_loses_the_stability_points():
    result = grade("01.iwae", lambda log_w: log_w.exp().mean(-1).log())
    assert failed_kinds(result) == {"stability"}, str(result)
    assert "not finite" in str(result)


def test_log_sum_exp_without_log_k_is_explained():
    result = grade("01.iwae", lambda log_w: torch.logsumexp(log_w, -1))
    assert "subtract log K" in str(result) and "value" in failed_kinds(result)
    assert "K = 1" not in failed_kinds(result)


def test_mean_of_log_weights_is_the_elbo_not_the_bound():
    result = grade("01.iwae", lambda log_w: log_w.mean(-1))
    assert "K-sample ELBO" in str(result) and result.status == "partial"


def test_manual_max_shift_is_a_correct_answer():
    def shifted(log_w):
        top = log_w.max(-1, keepdim=True).values
        return top[..., 0] + (log_w - top).exp().mean(-1).log()
    result = grade("01.iwae", shifted)
    assert result.status == "passed", str(result)
    assert math.isfinite(float(shifted(torch.full((1, 3), -1000.0))[0]))
