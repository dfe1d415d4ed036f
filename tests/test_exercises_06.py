"""Notebook 06's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import pytest
import torch

from course_lib.exercises.parameterisations import (reference_diffusion_loss_batch,
                                                    reference_to_eps, reference_tweedie_x0)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


def per_example(coef, x):
    return coef.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))         # (B,) -> (B, 1, ..., 1)


@pytest.mark.parametrize("ex_id, reference", [("06.to_eps", reference_to_eps),
                                              ("06.tweedie", reference_tweedie_x0),
                                              ("06.loss", reference_diffusion_loss_batch)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


# ------------------------------------------------------------------------ to_eps
def test_to_eps_written_out_by_hand_passes():
    def by_hand(pred, kind, xt, t, alpha_bars):
        a = per_example(alpha_bars[t], xt)
        if kind == "x0":
            return (xt - a.sqrt() * pred) / (1 - a).sqrt()
        if kind == "score":
            return -(1 - a).sqrt() * pred
        return pred
    result = grade("06.to_eps", by_hand)
    assert result.status == "passed", str(result)


def test_to_eps_with_alpha_t_for_alpha_bar_t_is_explained():
    def one_step(pred, kind, xt, t, alpha_bars):
        alphas = torch.cat([alpha_bars[:1], alpha_bars[1:] / alpha_bars[:-1]])
        return reference_to_eps(pred, kind, xt, t, alphas)
    result = grade("06.to_eps", one_step)
    assert "alpha_t (one step)" in str(result) and result.status in ("partial", "failed")


def test_to_eps_without_square_roots_is_explained():
    def no_sqrt(pred, kind, xt, t, alpha_bars):
        a = per_example(alpha_bars[t], xt)
        return (xt - a * pred) / (1 - a) if kind == "x0" else -(1 - a) * pred if kind == "score" else pred
    result = grade("06.to_eps", no_sqrt)
    assert "square root" in str(result) and "standard deviation" in str(result)
    assert {"value", "batching", "properties"} <= failed_kinds(result)


def test_to_eps_score_with_wrong_sign_loses_the_score_case():
    def plus(pred, kind, xt, t, alpha_bars):
        out = reference_to_eps(pred, kind, xt, t, alpha_bars)
        return -out if kind == "score" else out
    result = grade("06.to_eps", plus)
    assert "sign is wrong" in str(result) and "shape" not in failed_kinds(result)


# ------------------------------------------------------------------------ Tweedie
def test_tweedie_written_out_by_hand_passes():
    def by_hand(xt, score, t, alpha_bars):
        a = per_example(alpha_bars[t], xt)
        return (xt + (1 - a) * score) / a.sqrt()
    assert grade("06.tweedie", by_hand).status == "passed"


def test_tweedie_with_std_for_variance_is_explained():
    def std(xt, score, t, alpha_bars):
        a = per_example(alpha_bars[t], xt)
        return (xt + (1 - a).sqrt() * score) / a.sqrt()
    result = grade("06.tweedie", std)
    assert "variance" in str(result) and result.points <= 1


def test_tweedie_without_the_rescaling_is_explained():
    def no_rescale(xt, score, t, alpha_bars):
        return xt + per_example(1 - alpha_bars[t], xt) * score
    result = grade("06.tweedie", no_rescale)
    assert "divide by sqrt(alpha-bar_t)" in str(result) and result.status in ("partial", "failed")


# -------------------------------------------------------------------------- loss
def test_loss_written_out_by_hand_passes():
    def by_hand(model, x0, t, eps, alpha_bars, kind):
        a = per_example(alpha_bars[t], x0)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        target = {"eps": eps, "x0": x0, "score": -eps / (1 - a).sqrt()}[kind]
        return (model(xt, t.float()) - target).pow(2).mean()
    result = grade("06.loss", by_hand)
    assert result.status == "passed", str(result)


def test_loss_summed_over_coordinates_is_explained():
    def summed(model, x0, t, eps, alpha_bars, kind):
        per = reference_diffusion_loss_batch(model, x0, t, eps, alpha_bars, kind)
        return per * x0[0].numel()
    result = grade("06.loss", summed)
    assert "mean, not sum" in str(result) and {"value", "batching"} <= failed_kinds(result)


def test_loss_with_score_target_of_wrong_sign_is_explained():
    def wrong_sign(model, x0, t, eps, alpha_bars, kind):
        if kind != "score":
            return reference_diffusion_loss_batch(model, x0, t, eps, alpha_bars, kind)
        a = per_example(alpha_bars[t], x0)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return (model(xt, t.to(x0.dtype)) - eps / (1 - a).sqrt()).pow(2).mean()
    result = grade("06.loss", wrong_sign)
    assert "sign is wrong" in str(result) and failed_kinds(result) == {"value", "batching"}


def test_loss_without_gradient_fails_the_gradient_case():
    def detached(model, x0, t, eps, alpha_bars, kind):
        with torch.no_grad():
            return reference_diffusion_loss_batch(model, x0, t, eps, alpha_bars, kind)
    result = grade("06.loss", detached)
    assert failed_kinds(result) == {"gradient"} and "no gradient" in str(result)
