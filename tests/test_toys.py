"""2-D toy samplers: shapes, standardisation, determinism, labels that match the construction."""
import math

import pytest
import torch

from course_lib.data.toys import TOY_N_CLASSES, TOYS, sample_toy, sample_toy_labelled


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", TOYS)
def test_shape_dtype_and_standardised(name):
    x = sample_toy(name, 200_000, generator=gen())
    assert x.shape == (200_000, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()
    torch.testing.assert_close(x.mean(0), torch.zeros(2), atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(2), atol=0.02, rtol=0)


@pytest.mark.parametrize("name", TOYS)
def test_generator_makes_draws_repeatable(name):
    a, b = sample_toy(name, 100, generator=gen(1)), sample_toy(name, 100, generator=gen(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, sample_toy(name, 100, generator=gen(2)))
    assert sample_toy(name, 1).shape == (1, 2)


@pytest.mark.parametrize("name", TOYS)
def test_labelled_version_matches_and_labels_are_balanced(name):
    x, y = sample_toy_labelled(name, 40_000, gen(4))
    assert torch.equal(x, sample_toy(name, 40_000, generator=gen(4)))
    k = TOY_N_CLASSES[name]
    assert y.shape == (40_000,) and y.dtype == torch.int64
    counts = torch.bincount(y, minlength=k)
    assert len(counts) == k and (counts > 0.8 * 40_000 / k).all()


@pytest.mark.parametrize("name", ["two_moons", "eight_gaussians", "checkerboard"])
def test_labels_separate_the_points(name):
    """Each class sits in its own part of the plane: the nearest class mean gives the label."""
    x, y = sample_toy_labelled(name, 20_000, gen(5))
    means = torch.stack([x[y == c].mean(0) for c in range(TOY_N_CLASSES[name])])
    nearest = torch.cdist(x, means).argmin(dim=1)
    assert (nearest == y).float().mean() > 0.85


def test_swiss_roll_labels_are_thirds_of_the_arc():
    """Undo the standardisation with Monte Carlo moments of the raw roll; the radius is about t."""
    g = gen(9)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(400_000, generator=g, dtype=torch.float64))
    noise = torch.randn(400_000, 2, generator=g, dtype=torch.float64)
    raw = torch.stack([t * t.cos(), t * t.sin()], dim=1) + noise   # the construction, written out
    x, y = sample_toy_labelled("swiss_roll", 20_000, gen(10))
    back = x.double() * raw.std(0) + raw.mean(0)
    expected = ((back.norm(dim=1) - 1.5 * math.pi) / math.pi).floor().clamp(0, 2).long()
    assert (expected == y).float().mean() > 0.8


def test_eight_gaussians_construction():
    x, y = sample_toy_labelled("eight_gaussians", 8_000, gen(6))
    scale = math.sqrt(2.0**2 / 2 + 0.1**2)
    angle = y.double() * math.pi / 4
    centres = 2.0 * torch.stack([angle.cos(), angle.sin()], dim=1) / scale
    assert ((x.double() - centres).norm(dim=1) < 5 * 0.1 / scale).all()


def test_checkerboard_points_lie_on_filled_squares():
    x, y = sample_toy_labelled("checkerboard", 8_000, gen(7))
    raw = x * (4 / math.sqrt(12))                            # undo the standardisation
    col, row = (raw + 2).floor().long().unbind(dim=1)
    assert ((col + row) % 2 == 0).all() and (raw.abs() <= 2).all()
    assert torch.equal(y // 2, row)                          # squares numbered row by row


def test_two_moons_labels_are_the_arcs():
    x, y = sample_toy_labelled("two_moons", 8_000, gen(8))
    assert x[y == 0, 1].mean() > x[y == 1, 1].mean()         # the first moon is the upper arc


def test_bad_arguments():
    with pytest.raises(ValueError, match="name") as err:
        sample_toy("spirals", 10)
    for valid in TOYS:
        assert valid in str(err.value)
    with pytest.raises(ValueError, match="n"):
        sample_toy("two_moons", 0)
    with pytest.raises(TypeError, match="n"):
        sample_toy("two_moons", 10.0)
    with pytest.raises(TypeError, match="generator"):
        sample_toy("two_moons", 10, generator=0)
