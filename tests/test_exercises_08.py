"""Notebook 08's exercises: the library's answers get full marks, stubs get "not attempted", and
typical mistakes lose points with a message that says what went wrong."""
import math

import pytest
import torch

from course_lib.exercises.score_matching import (reference_annealed_langevin, reference_dsm_loss,
                                                 reference_langevin_step)
from course_lib.grading import grade

from grading_helpers import failed_kinds, stub


@pytest.mark.parametrize("ex_id, reference", [("08.langevin_step", reference_langevin_step),
                                              ("08.dsm_loss", reference_dsm_loss),
                                              ("08.annealed_langevin", reference_annealed_langevin)])
def test_reference_gets_full_marks_and_stub_gets_zero(ex_id, reference):
    full = grade(ex_id, reference)
    assert full.status == "passed" and full.points == full.max_points >= 5, str(full)
    empty = grade(ex_id, stub)
    assert empty.status == "not attempted" and empty.points == 0


def test_langevin_step_written_out_by_hand_passes():
    result = grade("08.langevin_step", lambda x, s, c, z: x + c * s + (2 * c) ** 0.5 * z)
    assert result.status == "passed", str(result)


def test_langevin_step_with_sqrt_c_noise_is_explained():
    result = grade("08.langevin_step", lambda x, s, c, z: x + c * s + math.sqrt(c) * z)
    assert "sqrt(2 c)" in str(result) and "value" in failed_kinds(result)
    assert result.points <= 2


def test_dsm_loss_by_hand_passes():
    def by_hand(score_fn, x, sigma, z):
        s = torch.as_tensor(sigma, dtype=x.dtype).expand(len(x)).reshape(-1, *[1] * (x.ndim - 1))
        x_noisy = x + s * z
        target = -(x_noisy - x) / s**2
        return 0.5 * (s**2 * (score_fn(x_noisy, s.flatten()) - target) ** 2).reshape(len(x), -1).sum(1)
    assert grade("08.dsm_loss", by_hand).status == "passed"


@pytest.mark.parametrize("mistake, message", [
    ("sign", "wrong sign"), ("no_weight", "weighting is missing")])
def test_dsm_loss_typical_mistakes_are_explained(mistake, message):
    def wrong(score_fn, x, sigma, z):
        s = torch.as_tensor(sigma, dtype=x.dtype).expand(len(x)).reshape(-1, *[1] * (x.ndim - 1))
        pred = score_fn(x + s * z, s.flatten())
        err = s * pred - z if mistake == "sign" else pred + z / s
        return 0.5 * err.pow(2).reshape(len(x), -1).sum(1)
    result = grade("08.dsm_loss", wrong)
    assert message in str(result) and "value" in failed_kinds(result)
    assert result.status != "passed"


def test_dsm_loss_averaged_over_pixels_fails_on_images():
    def averaged(score_fn, x, sigma, z):
        return reference_dsm_loss(score_fn, x, sigma, z) / x[0].numel()
    result = grade("08.dsm_loss", averaged)
    assert "batching" in failed_kinds(result) and "shape" not in failed_kinds(result)


def test_annealed_langevin_with_a_constant_step_is_explained():
    def constant_step(score_fn, x, sigmas, steps_per_sigma, eps, zs):
        k = 0
        for sigma in sigmas.tolist():
            s = torch.full((len(x),), sigma, dtype=x.dtype)
            for _ in range(steps_per_sigma):
                x = reference_langevin_step(x, score_fn(x, s), eps, zs[k])
                k += 1
        return x
    result = grade("08.annealed_langevin", constant_step)
    assert "same at every level" in str(result) and result.status != "passed"


def test_annealed_langevin_smallest_sigma_first_fails_the_order_case():
    def reversed_order(score_fn, x, sigmas, steps_per_sigma, eps, zs):
        return reference_annealed_langevin(score_fn, x, sigmas.flip(0), steps_per_sigma,
                                           eps * float(sigmas[0] / sigmas[-1]) ** 2, zs)
    result = grade("08.annealed_langevin", reversed_order)
    assert "order" in failed_kinds(result) and result.status != "passed"
