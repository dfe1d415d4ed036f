"""Notebook 09's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import pytest
import torch

from course_lib.exercises.guidance import (reference_cfg_combine, reference_drop_labels,
                                           reference_guided_eps)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


def per_example(coef, x):
    return coef.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))         # (B,) -> (B, 1, ..., 1)


@pytest.mark.parametrize("ex_id, reference", [("09.guided_eps", reference_guided_eps),
                                              ("09.cfg", reference_cfg_combine),
                                              ("09.drop_labels", reference_drop_labels)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


def test_written_out_by_hand_passes():
    def guided(eps, grad, t, alpha_bars, gamma):
        return eps - gamma * per_example((1 - alpha_bars[t]).sqrt(), eps) * grad
    assert grade("09.guided_eps", guided).status == "passed"
    assert grade("09.cfg", lambda c, u, g: g * c + (1 - g) * u).status == "passed"
    def drop(y, p, u):
        y = y.clone()
        y[u < p] = -1
        return y
    assert grade("09.drop_labels", drop).status == "passed"


@pytest.mark.parametrize("mistake, message", [
    (lambda e, g, ab, at: e + g * (1 - ab).sqrt(), "sign"),
    (lambda e, g, ab, at: e - g * (1 - ab), "variance"),
    (lambda e, g, ab, at: e - g * (1 - at).sqrt(), "alpha_t"),
])
def test_guided_eps_mistakes_are_explained(mistake, message):
    def wrong(eps, grad, t, alpha_bars, gamma):
        ab = per_example(alpha_bars[t], eps)
        at = per_example(alpha_bars[t] / alpha_bars[t - 1], eps)
        return mistake(eps, gamma * grad, ab, at)
    result = grade("09.guided_eps", wrong)
    assert message in str(result) and result.points <= 2, str(result)
    assert {"value", "batching", "properties"} <= failed_kinds(result)


def test_cfg_with_w_instead_of_gamma_is_explained():
    result = grade("09.cfg", lambda c, u, w: c + w * (c - u))
    assert "w = gamma" in str(result) and result.status in ("partial", "failed")
    assert {"value", "properties"} <= failed_kinds(result)


def test_cfg_with_swapped_predictions_fails():
    result = grade("09.cfg", lambda c, u, g: g * u + (1 - g) * c)
    assert "swapped" in str(result) and "value" in failed_kinds(result)


def test_drop_labels_inverted_or_with_zero_as_null_is_explained():
    inverted = grade("09.drop_labels", lambda y, p, u: torch.where(u >= p, torch.full_like(y, -1), y))
    assert "u >= p_uncond" in str(inverted) and {"value", "properties", "statistics"} <= failed_kinds(inverted)
    zero = grade("09.drop_labels", lambda y, p, u: torch.where(u < p, torch.zeros_like(y), y))
    assert "not 0" in str(zero) and "value" in failed_kinds(zero)


def test_drop_labels_in_place_is_caught():
    def in_place(y, p, u):
        y[u < p] = -1
        return y
    result = grade("09.drop_labels", in_place)
    assert "in place" in str(result) and "value" in failed_kinds(result)
