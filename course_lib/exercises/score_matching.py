"""Exercises of notebook 08 (score matching and Langevin dynamics): one Langevin step, the
denoising score-matching loss, and the annealed Langevin loop.

The learner's functions take plain tensors, (B, D) points or (B, C, H, W) images. The
`reference_*` functions give the library's answer in the same signature, by way of
`course_lib.score`; the annealed loop's cases compare with `score.annealed_langevin` itself,
fed the same noise draws from the same seeded generator.
"""
from __future__ import annotations

import math

import torch

from ..grading.core import Mismatch, exercise, expect_close, expect_shape, expect_tensor, seeded
from ..score import annealed_langevin, dsm_loss_per_example, geometric_sigmas, langevin_step

F64 = torch.float64


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))                     # (B,) -> (B, 1, ..., 1)


# ----------------------------------------------------------- the library's answers
def reference_langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float,
                            z: torch.Tensor) -> torch.Tensor:
    """x + c score + sqrt(2c) z  (Luo 2022, Eq. 158)."""
    return langevin_step(x, score, step_size, z)


def reference_dsm_loss(score_fn, x: torch.Tensor, sigma, z: torch.Tensor) -> torch.Tensor:
    """1/2 sigma^2 ||s(x + sigma z, sigma) + z / sigma||^2 per example (B,)  (Vincent 2011)."""
    return dsm_loss_per_example(score_fn, x, sigma, z=z)


def reference_annealed_langevin(score_fn, x: torch.Tensor, sigmas: torch.Tensor,
                                steps_per_sigma: int, eps: float, zs: torch.Tensor) -> torch.Tensor:
    """Annealed Langevin (Song & Ermon 2019, Algorithm 1) with the noise draws given:
    step k (counting from 0 over all levels) uses zs[k]; zs has shape (L * steps_per_sigma, *x.shape)."""
    k = 0
    for sigma in sigmas.tolist():
        c = eps * sigma**2 / float(sigmas[-1]) ** 2
        s = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        for _ in range(steps_per_sigma):
            x = langevin_step(x, score_fn(x, s), c, zs[k])
            k += 1
    return x


# ------------------------------------------------------------------ one Langevin step
LANGEVIN_STEP = exercise("08.langevin_step", "One step of Langevin dynamics")


def _step_inputs(shape, seed: int):
    g = seeded(seed)
    return (torch.randn(*shape, generator=g, dtype=F64), torch.randn(*shape, generator=g, dtype=F64),
            torch.randn(*shape, generator=g, dtype=F64))


@LANGEVIN_STEP.case("shape", "2-D points (B, 2) -> the next points, shape (B, 2)")
def _ls_shape(fn):
    x, s, z = _step_inputs((9, 2), seed=81)
    expect_shape(fn(x, s, 0.05, z), (9, 2), "the next state of (9, 2) points")


@LANGEVIN_STEP.case("value", "x + c s(x) + sqrt(2c) z (Luo Eq. 158) for two step sizes", points=2)
def _ls_value(fn):
    x, s, z = _step_inputs((16, 2), seed=82)
    for c in (0.01, 0.3):
        out = expect_tensor(fn(x, s, c, z), "the next state")
        if out.shape == x.shape and torch.allclose(out, x + c * s + math.sqrt(c) * z, atol=1e-9):
            raise Mismatch("the noise is scaled by sqrt(c); Langevin dynamics needs sqrt(2 c), "
                           "or the chain samples p(x)^2 (renormalised) instead of p(x)")
        if out.shape == x.shape and torch.allclose(out, x - c * s + math.sqrt(2 * c) * z, atol=1e-9):
            raise Mismatch("the step goes down the score; Langevin climbs log p: x + c s(x)")
        expect_close(out, reference_langevin_step(x, s, c, z), f"the Langevin step with c = {c}")


@LANGEVIN_STEP.case("batching", "images (B, 1, 28, 28): the same code path")
def _ls_images(fn):
    x, s, z = _step_inputs((3, 1, 28, 28), seed=83)
    expect_close(fn(x, s, 0.002, z), reference_langevin_step(x, s, 0.002, z),
                 "the Langevin step for a batch of images")


@LANGEVIN_STEP.case("properties", "z = 0 is plain gradient ascent on log p; float32 stays float32")
def _ls_properties(fn):
    x, s, _ = _step_inputs((5, 3), seed=84)
    expect_close(fn(x, s, 0.1, torch.zeros_like(x)), x + 0.1 * s, "the step with z = 0")
    x32, s32, z32 = (v.float() for v in _step_inputs((4, 2), seed=85))
    out = expect_tensor(fn(x32, s32, 0.1, z32), "the step on float32 inputs")
    if out.dtype != torch.float32:
        raise Mismatch(f"float32 inputs should give a float32 result, got {out.dtype}")


# ------------------------------------------------------------- denoising score matching
DSM = exercise("08.dsm_loss", "The denoising score-matching loss, sigma^2-weighted, per example")


def _blurred_gaussian_score(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """An imperfect score model: the score of N(0, (1 + sigma^2) I) plus a bend."""
    var = 1 + _bcast(sigma, y) ** 2
    return -y / var + 0.2 * torch.sin(y)


def _dsm_inputs(shape, seed: int):
    g = seeded(seed)
    x = torch.randn(*shape, generator=g, dtype=F64)
    z = torch.randn(*shape, generator=g, dtype=F64)
    return x, z


def _as_tensor_sigma(sigma, x):
    return torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])


@DSM.case("shape", "one loss per example: (B, 2) -> (B,)")
def _dsm_shape(fn):
    x, z = _dsm_inputs((7, 2), seed=91)
    expect_shape(fn(_blurred_gaussian_score, x, torch.full((7,), 0.5, dtype=F64), z), (7,),
                 "the loss of (7, 2) points")


@DSM.case("value", "1/2 sigma^2 ||s(x + sigma z) - (-z / sigma)||^2, one sigma per example", points=2)
def _dsm_value(fn):
    x, z = _dsm_inputs((16, 2), seed=92)
    sigma = torch.linspace(0.05, 2.0, 16, dtype=F64)
    out = fn(_blurred_gaussian_score, x, sigma, z)
    ref = reference_dsm_loss(_blurred_gaussian_score, x, sigma, z)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        s = _blurred_gaussian_score(x + sigma[:, None] * z, sigma)
        sig = sigma[:, None]
        if torch.allclose(out, 0.5 * ((sig * s - z) ** 2).sum(1), rtol=1e-4):
            raise Mismatch("the target has the wrong sign: the score of q(x~ | x) is "
                           "-(x~ - x) / sigma^2 = -z / sigma, so the loss is 1/2 ||sigma s + z||^2")
        if torch.allclose(out, 0.5 * ((s + z / sig) ** 2).sum(1), rtol=1e-4):
            raise Mismatch("the sigma^2 weighting is missing: multiply the squared error by sigma^2 "
                           "(equivalently, 1/2 ||sigma s + z||^2)")
        if torch.allclose(out, 0.5 * ((s + z) ** 2).sum(1), rtol=1e-4):
            raise Mismatch("the target is the score of q(x~ | x) = -z / sigma, not -z; and the "
                           "error is weighted by sigma^2")
    expect_close(out, ref, "the DSM loss")


@DSM.case("batching", "images (B, 1, 28, 28): sums (not averages) over the pixels of an example")
def _dsm_images(fn):
    x, z = _dsm_inputs((4, 1, 28, 28), seed=93)
    sigma = torch.tensor([0.1, 0.5, 1.0, 3.0], dtype=F64)
    expect_close(fn(_blurred_gaussian_score, x, sigma, z),
                 reference_dsm_loss(_blurred_gaussian_score, x, sigma, z), "the DSM loss of images")


@DSM.case("properties", "the score model is called at the noisy point x + sigma z, with sigma")
def _dsm_called_right(fn):
    x, z = _dsm_inputs((6, 2), seed=94)
    sigma = torch.full((6,), 0.7, dtype=F64)
    seen = {}

    def spy(y, s):
        seen["y"], seen["s"] = y.detach().clone(), torch.as_tensor(s).detach().clone()
        return _blurred_gaussian_score(y, _as_tensor_sigma(s, y))
    fn(spy, x, sigma, z)
    if "y" not in seen:
        raise Mismatch("score_fn was never called")
    if not torch.allclose(seen["y"].double(), x + 0.7 * z):
        raise Mismatch("score_fn should be evaluated at the noisy point x~ = x + sigma z")
    if seen["s"].numel() not in (1, 6) or not torch.allclose(seen["s"].double(), torch.tensor(0.7, dtype=F64)):
        raise Mismatch("score_fn should be given the noise level sigma as its second argument")


# ------------------------------------------------------------------ annealed Langevin
ANNEALED = exercise("08.annealed_langevin", "Annealed Langevin dynamics over a ladder of noise levels")


def _mixture_score(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact score of the 1-D-per-coordinate mixture 1/2 N(-1, s^2) + 1/2 N(1, s^2), s^2 = 0.1 + sigma^2."""
    var = 0.1 + _bcast(sigma, y) ** 2
    return -y / var + torch.tanh(y / var) / var


def _annealed_inputs(shape, L: int, steps: int, seed: int):
    """x, and the noise draws exactly as score.annealed_langevin makes them with seeded(seed)."""
    x = 3 * torch.randn(*shape, generator=seeded(seed), dtype=F64)
    g = seeded(seed + 1)
    zs = torch.stack([torch.randn(shape, generator=g, dtype=F64) for _ in range(L * steps)])
    return x, zs


def _library(x, sigmas, steps, eps, seed):
    return annealed_langevin(_mixture_score, x, sigmas, steps, eps=eps, generator=seeded(seed + 1))


@ANNEALED.case("shape", "(B, 2) starting points -> (B, 2) samples")
def _al_shape(fn):
    sigmas = geometric_sigmas(2.0, 0.1, 4)
    x, zs = _annealed_inputs((8, 2), 4, 3, seed=101)
    expect_shape(fn(_mixture_score, x, sigmas, 3, 1e-2, zs), (8, 2), "the samples")


@ANNEALED.case("value", "step size eps sigma_i^2 / sigma_L^2 at level i; zs[k] at step k; "
                        "matches score.annealed_langevin", points=2)
def _al_value(fn):
    sigmas = geometric_sigmas(3.0, 0.2, 5)
    x, zs = _annealed_inputs((20, 2), 5, 4, seed=102)
    out = fn(_mixture_score, x, sigmas, 4, 5e-3, zs)
    ref = _library(x, sigmas, 4, 5e-3, seed=102)
    if isinstance(out, torch.Tensor) and out.shape == ref.shape:
        const = x
        for k in range(len(zs)):
            s = torch.full((20,), float(sigmas[k // 4]), dtype=F64)
            const = langevin_step(const, _mixture_score(const, s), 5e-3, zs[k])
        if torch.allclose(out, const, atol=1e-8):
            raise Mismatch("the step size is the same at every level; it should be "
                           "eps * sigma_i^2 / sigma_L^2, large at large noise and eps at the last level")
    expect_close(out, ref, "the annealed Langevin samples", atol=1e-6)


@ANNEALED.case("batching", "images (B, 1, 28, 28): the same code path")
def _al_images(fn):
    sigmas = geometric_sigmas(1.0, 0.1, 3)
    x, zs = _annealed_inputs((2, 1, 28, 28), 3, 2, seed=103)
    expect_close(fn(_mixture_score, x, sigmas, 2, 1e-2, zs), _library(x, sigmas, 2, 1e-2, seed=103),
                 "annealed Langevin on images", atol=1e-6)


@ANNEALED.case("order", "levels are visited largest sigma first, each for steps_per_sigma steps, "
                        "and the score gets sigma as a (B,) tensor")
def _al_order(fn):
    sigmas = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    x, zs = _annealed_inputs((5, 2), 3, 2, seed=104)
    seen = []

    def spy(y, s):
        s = torch.as_tensor(s)
        if s.shape != (5,):
            raise Mismatch(f"score_fn should get sigma as a (B,) = (5,) tensor, got shape {tuple(s.shape)}")
        seen.append(float(s[0]))
        return _mixture_score(y, s)
    fn(spy, x, sigmas, 2, 1e-2, zs)
    if seen != [2.0, 2.0, 1.0, 1.0, 0.5, 0.5]:
        raise Mismatch(f"expected the score at sigmas [2, 2, 1, 1, 0.5, 0.5] in this order, got {seen}")
