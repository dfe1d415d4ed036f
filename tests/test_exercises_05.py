"""Notebook 05's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import pytest
import torch

from course_lib.exercises.diffusion_elbo import (reference_denoising_kl,
                                                 reference_posterior_mean_variance,
                                                 reference_snr_weighted_loss)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


def per_example(coef, x):
    return coef.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))         # (B,) -> (B, 1, ..., 1)


@pytest.mark.parametrize("ex_id, reference", [("05.posterior", reference_posterior_mean_variance),
                                              ("05.denoising_kl", reference_denoising_kl),
                                              ("05.snr_loss", reference_snr_weighted_loss)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


def test_posterior_written_out_by_hand_passes():
    def by_hand(x0, xt, t, alpha_bars):                               # Luo (2022), Eq. 84
        ab_t, ab_prev = per_example(alpha_bars[t], x0), per_example(alpha_bars[t - 1], x0)
        alpha_t = ab_t / ab_prev
        mean = (alpha_t.sqrt() * (1 - ab_prev) * xt + ab_prev.sqrt() * (1 - alpha_t) * x0) / (1 - ab_t)
        return mean, (1 - alpha_t) * (1 - ab_prev) / (1 - ab_t)
    result = grade("05.posterior", by_hand)
    assert result.status == "passed", str(result)


def test_posterior_with_alpha_bar_for_alpha_is_explained():
    def all_steps(x0, xt, t, alpha_bars):
        ab_t, ab_prev = per_example(alpha_bars[t], x0), per_example(alpha_bars[t - 1], x0)
        beta = 1 - ab_t / ab_prev
        mean = (ab_prev.sqrt() * beta * x0 + ab_t.sqrt() * (1 - ab_prev) * xt) / (1 - ab_t)
        return mean, (1 - ab_prev) / (1 - ab_t) * beta
    result = grade("05.posterior", all_steps)
    assert "sqrt(alpha_t)" in str(result) and result.status == "partial"


def test_posterior_off_by_one_fails_the_indexing_case():
    def shifted(x0, xt, t, alpha_bars):                               # uses step t + 1's coefficients
        padded = torch.cat([alpha_bars, alpha_bars[-1:] * 0.5])
        return reference_posterior_mean_variance(x0, xt, t + 1, padded)
    result = grade("05.posterior", shifted)
    assert "indexing" in failed_kinds(result) and "point mass" in str(result)


def test_posterior_variance_of_shape_b_is_caught():
    def flat_variance(x0, xt, t, alpha_bars):
        mean, var = reference_posterior_mean_variance(x0, xt, t, alpha_bars)
        return mean, var.reshape(-1)
    result = grade("05.posterior", flat_variance)
    assert "shape" in failed_kinds(result) and "one value per example" in str(result)


def test_denoising_kl_without_the_half_is_explained():
    result = grade("05.denoising_kl", lambda mq, mp, s2: 2 * reference_denoising_kl(mq, mp, s2))
    assert "factor 1/2" in str(result) and result.points <= 2


def test_denoising_kl_averaged_over_pixels_fails():
    def averaged(mq, mp, s2):
        return (mq - mp).pow(2).reshape(len(mq), -1).mean(1) / (2 * s2)
    result = grade("05.denoising_kl", averaged)
    assert {"value", "batching", "properties"} <= failed_kinds(result)


def test_denoising_kl_over_the_last_dimension_only_fails_on_images():
    def last_dim(mq, mp, s2):
        return ((mq - mp).pow(2).sum(-1) / (2 * s2.reshape(-1, *[1] * (mq.ndim - 2)))).squeeze()
    result = grade("05.denoising_kl", last_dim)
    assert failed_kinds(result) == {"batching"}, str(result)


def test_snr_loss_off_by_one_is_explained():
    def next_step(x0, x0_pred, t, alpha_bars):
        snr = alpha_bars / (1 - alpha_bars)
        snr_next = torch.cat([snr, snr[-1:]])[t + 1]
        w = 0.5 * (snr[t] - snr_next)
        return w.to(x0.dtype) * (x0 - x0_pred).pow(2).reshape(len(x0), -1).sum(1)
    result = grade("05.snr_loss", next_step)
    assert "off by one" in str(result) and result.status in ("partial", "failed")


def test_snr_loss_with_snr_inverted_fails():
    def noise_to_signal(x0, x0_pred, t, alpha_bars):
        nsr = (1 - alpha_bars) / alpha_bars
        w = 0.5 * (nsr[t] - nsr[t - 1])
        return w.to(x0.dtype) * (x0 - x0_pred).pow(2).reshape(len(x0), -1).sum(1)
    result = grade("05.snr_loss", noise_to_signal)
    assert "value" in failed_kinds(result) and result.points <= 1
