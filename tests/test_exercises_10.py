"""Notebook 10's exercises: the references get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises.continuous_time import (reference_em_step, reference_log_snr_from_params,
                                                  reference_weighted_loss)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


def per_example(v, x):
    return v.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))             # (B,) -> (B, 1, ..., 1)


@pytest.mark.parametrize("ex_id, reference", [("10.em_step", reference_em_step),
                                              ("10.monotone_snr", reference_log_snr_from_params),
                                              ("10.likelihood_weighting", reference_weighted_loss)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


def test_em_step_by_hand_passes():
    def by_hand(x, drift, g, dt, z):
        return x + drift * dt + per_example(g, x) * math.sqrt(abs(dt)) * z
    assert grade("10.em_step", by_hand).status == "passed"


def test_em_step_with_dt_instead_of_sqrt_dt_is_explained():
    def no_sqrt(x, drift, g, dt, z):
        return x + drift * dt + per_example(g, x) * abs(dt) * z
    result = grade("10.em_step", no_sqrt)
    assert "sqrt(|dt|)" in str(result) and result.points <= 2


def test_em_step_with_sqrt_of_negative_dt_fails_in_reverse_time():
    def sqrt_dt(x, drift, g, dt, z):
        return x + drift * dt + per_example(g, x) * torch.sqrt(torch.tensor(dt, dtype=x.dtype)) * z
    result = grade("10.em_step", sqrt_dt)
    assert {"reverse time", "batching"} <= failed_kinds(result) and "NaN" in str(result)


def test_em_step_that_flips_the_drift_in_reverse_time_is_explained():
    def flipped(x, drift, g, dt, z):
        return x + drift * abs(dt) + per_example(g, x) * math.sqrt(abs(dt)) * z
    result = grade("10.em_step", flipped)
    assert failed_kinds(result) == {"reverse time", "batching"} and "|dt|" in str(result)


def test_monotone_snr_by_hand_passes():
    def by_hand(t, w, b, lambda_min, lambda_max):
        def phi_tilde(s):
            return s + (torch.sigmoid(10 * (s[:, None] - b)) * F.softplus(w)).sum(1)
        ends = phi_tilde(torch.tensor([0.0, 1.0], dtype=t.dtype))
        return lambda_max + (lambda_min - lambda_max) * (phi_tilde(t) - ends[0]) / (ends[1] - ends[0])
    assert grade("10.monotone_snr", by_hand).status == "passed"


def test_monotone_snr_without_softplus_is_not_monotone():
    def raw_weights(t, w, b, lambda_min, lambda_max):
        def phi_tilde(s):
            return s + (torch.sigmoid(10 * (s[:, None] - b)) * w).sum(1)
        ends = phi_tilde(torch.tensor([0.0, 1.0], dtype=t.dtype))
        return lambda_max - (lambda_max - lambda_min) * (phi_tilde(t) - ends[0]) / (ends[1] - ends[0])
    result = grade("10.monotone_snr", raw_weights)
    assert "monotone" in failed_kinds(result) and "softplus" in str(result)


def test_monotone_snr_without_normalising_misses_the_endpoints():
    def unnormalised(t, w, b, lambda_min, lambda_max):
        phi = t + (torch.sigmoid(10 * (t[:, None] - b)) * F.softplus(w)).sum(1)
        return lambda_max - (lambda_max - lambda_min) * phi
    result = grade("10.monotone_snr", unnormalised)
    assert "endpoints" in failed_kinds(result) and result.status == "partial"


def test_monotone_snr_increasing_is_explained():
    def backwards(t, w, b, lambda_min, lambda_max):
        return lambda_min + lambda_max - reference_log_snr_from_params(t, w, b, lambda_min, lambda_max)
    assert "wrong way" in str(grade("10.monotone_snr", backwards))


def test_weighted_loss_without_the_half_is_explained():
    result = grade("10.likelihood_weighting",
                   lambda *a, **k: 2 * reference_weighted_loss(*a, **k))
    assert "factor 1/2" in str(result) and result.points <= 2


def test_weighted_loss_with_the_wrong_sign_is_explained():
    def positive_slope(eps, eps_pred, log_snr, slope, weighting="elbo", bias=0.0):
        return reference_weighted_loss(eps, eps_pred, log_snr, -slope, weighting, bias)
    result = grade("10.likelihood_weighting", positive_slope)
    assert "negative" in str(result) and "value" in failed_kinds(result)


def test_weighted_loss_averaged_over_coordinates_fails():
    def averaged(eps, eps_pred, log_snr, slope, weighting="elbo", bias=0.0):
        from course_lib.continuous import weight
        err2 = (eps - eps_pred).pow(2).reshape(len(eps), -1).mean(1)     # mean, not sum
        return 0.5 * weight(weighting, log_snr, slope, bias) * (-slope) * err2
    result = grade("10.likelihood_weighting", averaged)
    assert {"value", "batching"} <= failed_kinds(result) and result.status != "passed"
