"""Notebook 03's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import math

import pytest
import torch

from course_lib.exercises.hvae import (reference_hvae_neg_elbo, reference_kl_top,
                                       reference_markov_log_joint)
from course_lib.gaussians import gaussian_kl, reparameterize
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub
from course_lib.vae import log_normal_diag




@pytest.mark.parametrize("ex_id, reference", [("03.markov_log_joint", reference_markov_log_joint),
                                              ("03.hvae_neg_elbo", reference_hvae_neg_elbo),
                                              ("03.kl_top", reference_kl_top)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


def test_log_joint_with_torch_distributions_is_a_correct_answer():
    def with_normal(log_px, zs, means, logvars):
        out = log_px + torch.distributions.Normal(0.0, 1.0).log_prob(zs[-1]).sum(-1)
        for z, m, lv in zip(zs, means, logvars):
            out = out + torch.distributions.Normal(m, (0.5 * lv).exp()).log_prob(z).sum(-1)
        return out
    assert grade("03.markov_log_joint", with_normal).status == "passed"


def test_log_joint_with_the_prior_on_the_wrong_level_fails():
    def prior_on_z1(log_px, zs, means, logvars):
        out = log_px + log_normal_diag(zs[0], torch.zeros_like(zs[0]), torch.zeros_like(zs[0]))
        for z, m, lv in zip(zs[1:], means, logvars):          # transitions shifted by one level
            out = out + log_normal_diag(z, m, lv) if z.shape == m.shape else out
        return out
    result = grade("03.markov_log_joint", prior_on_z1)
    assert "value" in failed_kinds(result) and result.points < result.max_points


def test_log_joint_without_the_constant_is_explained():
    def no_constant(log_px, zs, means, logvars):
        out = log_px - 0.5 * zs[-1].pow(2).sum(-1)
        for z, m, lv in zip(zs, means, logvars):
            out = out - 0.5 * (lv + (z - m).pow(2) / lv.exp()).sum(-1)
        return out
    result = grade("03.markov_log_joint", no_constant)
    assert "off by a constant" in str(result) and result.status in ("partial", "failed")


def test_log_joint_with_logvar_as_log_sigma_is_explained():
    def log_sigma(log_px, zs, means, logvars):
        return reference_markov_log_joint(log_px, zs, means, [2 * lv for lv in logvars])
    result = grade("03.markov_log_joint", log_sigma)
    assert "exp(logvar)" in str(result) and result.status in ("partial", "failed")


def _neg_elbo_pieces(model, x, eps1, eps2):
    mu1, lv1 = model.q_z1(x)
    z1 = reparameterize(mu1, lv1, eps1)
    mu2, lv2 = model.q_z2(z1)
    z2 = reparameterize(mu2, lv2, eps2)
    mu1p, lv1p = model.p_z1(z2)
    rec = -model.log_px(x, model.p_x(z1))
    return mu1, lv1, z1, mu2, lv2, z2, mu1p, lv1p, rec


def test_neg_elbo_with_a_closed_form_bottom_kl_is_explained():
    def analytic_bottom(model, x, eps1, eps2):
        mu1, lv1, z1, mu2, lv2, z2, mu1p, lv1p, rec = _neg_elbo_pieces(model, x, eps1, eps2)
        klb, klt = gaussian_kl(mu1, lv1, mu1p, lv1p), gaussian_kl(mu2, lv2)
        return rec + klb + klt, rec, klb, klt
    result = grade("03.hvae_neg_elbo", analytic_bottom)
    assert "closed form does not give" in str(result) and result.status == "partial"


def test_neg_elbo_feeding_the_top_encoder_the_mean_is_explained():
    def from_mean(model, x, eps1, eps2):
        mu1, lv1 = model.q_z1(x)
        z1 = reparameterize(mu1, lv1, eps1)
        mu2, lv2 = model.q_z2(mu1)                            # mistake: the mean, not the sample
        z2 = reparameterize(mu2, lv2, eps2)
        mu1p, lv1p = model.p_z1(z2)
        rec = -model.log_px(x, model.p_x(z1))
        klb = log_normal_diag(z1, mu1, lv1) - log_normal_diag(z1, mu1p, lv1p)
        klt = gaussian_kl(mu2, lv2)
        return rec + klb + klt, rec, klb, klt
    result = grade("03.hvae_neg_elbo", from_mean)
    assert "sampled z1" in str(result) and result.points < result.max_points


def test_neg_elbo_with_the_bottom_sign_flipped_is_explained():
    def flipped(model, x, eps1, eps2):
        total, rec, klb, klt = reference_hvae_neg_elbo(model, x, eps1, eps2)
        return rec - klb + klt, rec, -klb, klt
    result = grade("03.hvae_neg_elbo", flipped)
    assert "wrong sign" in str(result) and result.status == "partial"


def test_kl_top_at_the_encoder_mean_is_explained():
    def at_mean(model, x, eps1):
        mu2, lv2 = model.q_z2(model.q_z1(x)[0])
        return gaussian_kl(mu2[..., None], lv2[..., None])
    result = grade("03.kl_top", at_mean)
    assert "z1 = mu1 only" in str(result) and result.points < result.max_points


def test_kl_top_summed_over_dimensions_loses_the_shape_and_value_points():
    def summed(model, x, eps1):
        return reference_kl_top(model, x, eps1).sum(-1)
    result = grade("03.kl_top", summed)
    assert {"shape", "value"} <= failed_kinds(result)


def test_kl_top_in_the_reverse_direction_is_explained():
    def reverse(model, x, eps1):
        z1 = reparameterize(*model.q_z1(x), eps1)
        mu2, lv2 = model.q_z2(z1.flatten(0, 1))
        kl = 0.5 * ((-lv2).exp() * (1 + mu2.pow(2)) - 1 + lv2)   # KL(N(0, 1) || q)
        return kl.view(*z1.shape[:2], -1).mean(0)
    result = grade("03.kl_top", reverse)
    assert "KL(N(0, 1) || q(z2 | z1))" in str(result) and result.points < result.max_points
