"""Notebook 07's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import pytest
import torch

from course_lib.exercises.sampling import (reference_ddim_sigma, reference_ddim_step,
                                           reference_ddpm_step)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


def per_example(coef, x):
    return coef.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))         # (B,) -> (B, 1, ..., 1)


def ddpm_by_hand(eps_pred, xt, t, alpha_bars, z, *, use_alpha_bar=False, variance="posterior",
                 noise_at_1=False):
    """Ho et al. (2020), Algorithm 2, with switches for the usual mistakes."""
    ab_t, ab_prev = per_example(alpha_bars[t], xt), per_example(alpha_bars[t - 1], xt)
    alpha_t = ab_t / ab_prev
    beta_t = 1 - alpha_t
    mean = (xt - beta_t / (1 - ab_t).sqrt() * eps_pred) / (ab_t if use_alpha_bar else alpha_t).sqrt()
    var = (1 - ab_prev) / (1 - ab_t) * beta_t if variance == "posterior" else beta_t
    keep = torch.ones_like(ab_t) if noise_at_1 else per_example((t > 1).double(), xt)
    return mean + keep * var.sqrt() * z


def ddim_sigma_by_hand(t, t_prev, alpha_bars, eta, *, drop_factor=False):
    ab_t, ab_prev = alpha_bars[t], alpha_bars[t_prev]
    factor = 1.0 if drop_factor else 1 - ab_t / ab_prev
    return eta * ((1 - ab_prev) / (1 - ab_t) * factor).sqrt()


def ddim_by_hand(eps_pred, xt, t, t_prev, alpha_bars, eta, z, *, direction_ignores_sigma=False):
    """Song et al. (2021), Eq. 12."""
    ab_t, ab_prev = per_example(alpha_bars[t], xt), per_example(alpha_bars[t_prev], xt)
    sigma = per_example(ddim_sigma_by_hand(t, t_prev, alpha_bars, eta), xt)
    x0_pred = (xt - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
    keep = 1 - ab_prev - (0 if direction_ignores_sigma else sigma**2)
    return ab_prev.sqrt() * x0_pred + keep.clamp_min(0).sqrt() * eps_pred + sigma * z


@pytest.mark.parametrize("ex_id, reference", [("07.ddpm_step", reference_ddpm_step),
                                              ("07.ddim_sigma", reference_ddim_sigma),
                                              ("07.ddim_step", reference_ddim_step)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


@pytest.mark.parametrize("ex_id, fn", [("07.ddpm_step", ddpm_by_hand),
                                       ("07.ddim_sigma", ddim_sigma_by_hand),
                                       ("07.ddim_step", ddim_by_hand)])
def test_written_out_by_hand_passes(ex_id, fn):
    result = grade(ex_id, fn)
    assert result.status == "passed", str(result)


def test_ddpm_with_alpha_bar_for_alpha_is_explained():
    result = grade("07.ddpm_step", lambda *a: ddpm_by_hand(*a, use_alpha_bar=True))
    assert "sqrt(alpha_t)" in str(result) and result.status in ("partial", "failed")
    assert "value" in failed_kinds(result)


def test_ddpm_with_beta_for_beta_tilde_is_explained():
    result = grade("07.ddpm_step", lambda *a: ddpm_by_hand(*a, variance="beta"))
    assert "beta-tilde" in str(result) and {"value", "indexing"} <= failed_kinds(result)


def test_ddpm_noise_at_t1_with_beta_is_caught_by_the_indexing_case():
    result = grade("07.ddpm_step", lambda *a: ddpm_by_hand(*a, variance="beta", noise_at_1=True))
    assert "indexing" in failed_kinds(result) and "t = 1" in str(result)


def test_ddim_sigma_without_the_step_factor_is_explained():
    result = grade("07.ddim_sigma", lambda *a: ddim_sigma_by_hand(*a, drop_factor=True))
    assert "sqrt(1 - alpha-bar_t / alpha-bar_prev)" in str(result)
    assert {"value", "properties"} <= failed_kinds(result)


def test_ddim_sigma_returning_the_variance_is_explained():
    result = grade("07.ddim_sigma", lambda *a: reference_ddim_sigma(*a) ** 2)
    assert "standard deviation" in str(result) and result.status in ("partial", "failed")


def test_ddim_direction_ignoring_sigma_fails_only_with_noise():
    result = grade("07.ddim_step", lambda *a: ddim_by_hand(*a, direction_ignores_sigma=True))
    assert "sqrt(1 - alpha-bar_prev - sigma_t^2)" in str(result)
    assert "value" in failed_kinds(result) and "shape" not in failed_kinds(result)
    assert 0 < result.points < result.max_points


def test_ddim_step_for_images_over_the_last_dimension_fails():
    def flat_coefficients(eps_pred, xt, t, t_prev, alpha_bars, eta, z):
        ab_t, ab_prev = alpha_bars[t][:, None], alpha_bars[t_prev][:, None]   # (B, 1): 2-D only
        sigma = ddim_sigma_by_hand(t, t_prev, alpha_bars, eta)[:, None]
        x0_pred = (xt - (1 - ab_t).sqrt() * eps_pred) / ab_t.sqrt()
        return ab_prev.sqrt() * x0_pred + (1 - ab_prev - sigma**2).sqrt() * eps_pred + sigma * z
    result = grade("07.ddim_step", flat_coefficients)
    assert failed_kinds(result) == {"batching"}, str(result)
