"""Notebook 02's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import pytest
import torch
import torch.nn.functional as F

from course_lib.exercises.vae import (reference_kl_standard_normal, reference_neg_elbo,
                                      reference_sample_latents)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


@pytest.mark.parametrize("ex_id, reference", [("02.kl_standard_normal", reference_kl_standard_normal),
                                              ("02.neg_elbo", reference_neg_elbo),
                                              ("02.reparameterize", reference_sample_latents)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 4, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


def test_kl_averaged_over_dimensions_is_explained():
    result = grade("02.kl_standard_normal",
                   lambda mu, lv: 0.5 * (lv.exp() + mu**2 - 1 - lv).mean(-1))
    assert "averaged over the latent dimensions" in str(result) and result.status != "passed"


def test_kl_with_exp_of_twice_logvar_is_explained():
    result = grade("02.kl_standard_normal",
                   lambda mu, lv: 0.5 * ((2 * lv).exp() + mu**2 - 1 - 2 * lv).sum(-1))
    assert "not exp(2 logvar)" in str(result) and "value" in failed_kinds(result)


def test_neg_elbo_as_a_batch_mean_fails_the_shape_cases():
    mean = lambda *a, **k: reference_neg_elbo(*a, **k).mean()                # noqa: E731
    result = grade("02.neg_elbo", mean)
    assert {"shape", "value", "batching"} <= failed_kinds(result)


def test_neg_elbo_with_pixel_mean_is_explained():
    def pixel_mean(x, params, mu, logvar, likelihood="bernoulli", sigma=1.0):
        if likelihood == "gaussian":
            return reference_neg_elbo(x, params, mu, logvar, likelihood, sigma)
        bce = F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).mean(1)
        return bce + 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)
    result = grade("02.neg_elbo", pixel_mean)
    assert "averaged the cross-entropy" in str(result) and result.status == "partial"


def test_neg_elbo_with_naive_log_sigmoid_loses_the_stability_point():
    def naive(x, params, mu, logvar, likelihood="bernoulli", sigma=1.0):
        if likelihood == "gaussian":
            return reference_neg_elbo(x, params, mu, logvar, likelihood, sigma)
        p = torch.sigmoid(params)
        log_px = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
        return -log_px + 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)
    result = grade("02.neg_elbo", naive)
    assert failed_kinds(result) == {"stability"}, str(result)


def test_neg_elbo_without_gaussian_constant_is_explained():
    def no_const(x, params, mu, logvar, likelihood="bernoulli", sigma=1.0):
        if likelihood == "bernoulli":
            return reference_neg_elbo(x, params, mu, logvar)
        sq = (x - params).pow(2).flatten(1).sum(1) / (2 * sigma**2)
        return sq + 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)
    result = grade("02.neg_elbo", no_const)
    assert "normalising constant" in str(result) and result.status == "partial"


def test_sampling_one_noise_for_all_K_is_explained():
    def same_eps(mu, logvar, K, generator=None):
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
        return (mu + (0.5 * logvar).exp() * eps)[:, None].expand(-1, K, -1)
    result = grade("02.reparameterize", same_eps)
    assert "identical" in str(result) and "distribution" in failed_kinds(result)


def test_sampling_with_variance_instead_of_std_is_explained():
    def var_scale(mu, logvar, K, generator=None):
        eps = torch.randn(mu.shape[0], K, mu.shape[1], generator=generator, dtype=mu.dtype)
        return mu[:, None] + logvar[:, None].exp() * eps
    result = grade("02.reparameterize", var_scale)
    assert "standard deviation" in str(result) and result.status == "partial"


def test_sampling_in_k_major_order_is_a_correct_answer():
    def k_major(mu, logvar, K, generator=None):
        eps = torch.randn(K, *mu.shape, generator=generator, dtype=mu.dtype)
        return (mu + (0.5 * logvar).exp() * eps).transpose(0, 1)
    result = grade("02.reparameterize", k_major)
    assert result.status == "passed", str(result)
