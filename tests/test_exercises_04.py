"""Notebook 04's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import math

import pytest
import torch

from course_lib.exercises.forward_process import (reference_alpha_bars, reference_prior_kl,
                                                  reference_q_sample)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


@pytest.mark.parametrize("ex_id, reference", [("04.alpha_bars", reference_alpha_bars),
                                              ("04.q_sample", reference_q_sample),
                                              ("04.prior_kl", reference_prior_kl)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 4, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


def test_plain_cumprod_is_a_correct_answer():
    result = grade("04.alpha_bars", lambda betas: torch.cumprod(1 - betas, 0))
    assert result.status == "passed", str(result)


def test_alpha_bars_off_by_one_is_explained():
    shifted = lambda betas: torch.cumprod(1 - betas[1:], 0)            # (T,): drops alpha_bars[0]
    result = grade("04.alpha_bars", shifted)
    assert result.points == 0 and "should have shape (24,), got (23,)" in str(result)
    padded = lambda betas: torch.cat([torch.ones(1, dtype=betas.dtype),  # alpha_bars[t] = prod_{s<t}
                                      torch.cumprod(1 - betas, 0)[:-1]])
    result = grade("04.alpha_bars", padded)
    assert "off by one" in str(result) and result.status in ("partial", "failed")


def test_alpha_bars_as_one_minus_cumulative_beta_loses_the_value_points():
    result = grade("04.alpha_bars", lambda betas: 1 - torch.cumsum(betas, 0))
    assert {"value"} <= failed_kinds(result) and "shape" not in failed_kinds(result)


def test_q_sample_without_square_roots_is_explained():
    def no_sqrt(x0, t, alpha_bars, eps):
        a = alpha_bars[t].to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
        return a * x0 + (1 - a) * eps
    result = grade("04.q_sample", no_sqrt)
    assert "square roots" in str(result) and result.status == "partial"


def test_q_sample_that_only_broadcasts_over_2d_points_fails_on_images():
    def two_d_only(x0, t, alpha_bars, eps):
        a = alpha_bars[t].to(x0.dtype)[:, None]                        # (B, 1): right for (B, 2) only
        return a.sqrt() * x0 + (1 - a).sqrt() * eps
    result = grade("04.q_sample", two_d_only)
    assert failed_kinds(result) == {"batching"}, str(result)


def test_q_sample_in_float64_loses_the_dtype_point():
    def promoted(x0, t, alpha_bars, eps):
        a = alpha_bars[t].reshape(-1, *[1] * (x0.ndim - 1))           # float64 * float32 -> float64
        return a.sqrt() * x0 + (1 - a).sqrt() * eps
    result = grade("04.q_sample", promoted)
    assert failed_kinds(result) == {"dtype"}, str(result)


def test_q_sample_off_by_one_is_explained():
    def previous_step(x0, t, alpha_bars, eps):
        return reference_q_sample(x0, t - 1, alpha_bars, eps) if (t > 1).all() else x0 + 0 * eps
    result = grade("04.q_sample", previous_step)
    assert "off by one" in str(result)


def test_prior_kl_with_the_mean_term_only_is_explained():
    result = grade("04.prior_kl", lambda x0, a: 0.5 * a * x0.pow(2).reshape(len(x0), -1).sum(1))
    assert "only the mean term" in str(result) and result.status == "partial"


def test_prior_kl_averaged_over_pixels_fails():
    def averaged(x0, a):
        per_entry = 0.5 * (a * x0.pow(2) - a - math.log1p(-a))
        return per_entry.reshape(len(x0), -1).mean(1)
    result = grade("04.prior_kl", averaged)
    assert {"value", "batching"} <= failed_kinds(result)


def test_prior_kl_in_the_wrong_direction_fails():
    def reversed_kl(x0, a):                                            # KL(N(0, I) || q(x_T | x_0))
        per_entry = 0.5 * ((1 + a * x0.pow(2)) / (1 - a) - 1 + math.log1p(-a))
        return per_entry.reshape(len(x0), -1).sum(1)
    result = grade("04.prior_kl", reversed_kl)
    assert "value" in failed_kinds(result) and result.points < result.max_points
