"""Two-dimensional toy distributions, as samplers, for the 2-D VAE and diffusion exercises.

Each toy is drawn from a fixed construction (stated in `sample_toy_labelled`) and then mapped by
a fixed affine map, x -> (x - m) / s, where m and s are the exact per-axis mean and standard
deviation of that construction (worked out in closed form below). So every toy has mean 0 and
standard deviation 1 on each axis exactly in distribution, and the map does not depend on the
batch: two batches always come from the same distribution.

Torch only (no scikit-learn at run time), CPU, float32. Pass a `torch.Generator` to repeat draws.
"""
from __future__ import annotations

import math

import torch

from .._checks import check_choice, check_positive_int

TOYS = ("two_moons", "swiss_roll", "eight_gaussians", "checkerboard")
TOY_N_CLASSES = {"two_moons": 2, "swiss_roll": 3, "eight_gaussians": 8, "checkerboard": 8}

MOONS_NOISE = 0.1        # std of the Gaussian noise on the moons (scikit-learn's `noise`)
ROLL_NOISE = 1.0         # std of the noise on the raw swiss roll, as in FFJORD
ROLL_SEGMENTS = 3        # swiss-roll label: which third of the arc (half a turn each)
GAUSS_RADIUS, GAUSS_STD = 2.0, 0.1
BOARD_SIZE = 4           # checkerboard: 4 x 4 unit squares on [-2, 2]^2, 8 of them filled


def sample_toy(name: str, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points x ~ p_toy, shape (n, 2), float32; `name` is one of `TOYS`.

    The points of ``sample_toy_labelled(name, n, generator)`` without the labels (the same
    generator state gives the same points). Constructions are listed there.
    """
    return sample_toy_labelled(name, n, generator=generator)[0]


def sample_toy_labelled(name: str, n: int,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs (x, y) ~ p_toy(x, y): points (n, 2) float32 and class labels (n,) int64.

    Before standardising (see the module docstring):

    - "two_moons" (scikit-learn's ``make_moons``, Pedregosa et al. 2011): y ~ U{0, 1},
      t ~ U[0, pi]; y = 0: (cos t, sin t); y = 1: (1 - cos t, 1/2 - sin t); plus N(0, 0.1^2 I).
    - "swiss_roll" (scikit-learn's ``make_swiss_roll`` in the (x, z) plane, as in FFJORD,
      Grathwohl et al. 2019): u ~ U[0, 1], t = 3 pi (1 + 2u) / 2, x = (t cos t, t sin t) plus
      N(0, 1); y = floor(3u), the third of the arc (half a turn each).
    - "eight_gaussians" (Gulrajani et al. 2017; FFJORD): y ~ U{0..7}, x ~ N(2 (cos a, sin a),
      0.1^2 I) with a = y pi / 4.
    - "checkerboard" (FFJORD): the 4 x 4 board of unit squares on [-2, 2]^2; the 8 squares with
      (column + row) even are filled; y ~ U{0..7} picks one (numbered row by row from the bottom
      left) and x is uniform on it. The filled squares are all one colour, so the label is the
      square's number; y // 2 is its row.
    """
    check_choice("name", name, TOYS)
    check_positive_int("n", n)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    x, y = _RAW_SAMPLERS[name](n, generator)
    mean, std = _RAW_MOMENTS[name]
    return ((x - torch.tensor(mean)) / torch.tensor(std)).float(), y


# ----------------------------------------------------------------------------- raw samplers

def _uniform(*shape: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=g, dtype=torch.float64)


def _normal(*shape: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _two_moons(n: int, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 2, (n,), generator=g)
    t = math.pi * _uniform(n, g=g)
    outer = torch.stack([torch.cos(t), torch.sin(t)], dim=1)           # (n, 2)
    inner = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], dim=1)  # (n, 2)
    x = torch.where(y[:, None] == 0, outer, inner) + MOONS_NOISE * _normal(n, 2, g=g)
    return x, y


def _swiss_roll(n: int, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    u = _uniform(n, g=g)
    t = 1.5 * math.pi * (1 + 2 * u)
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1) + ROLL_NOISE * _normal(n, 2, g=g)
    y = (u * ROLL_SEGMENTS).long().clamp(max=ROLL_SEGMENTS - 1)
    return x, y


def _eight_gaussians(n: int, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, 8, (n,), generator=g)
    angle = y.double() * math.pi / 4
    centres = GAUSS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)  # (n, 2)
    return centres + GAUSS_STD * _normal(n, 2, g=g), y


def _filled_squares() -> torch.Tensor:
    """Lower-left corners (8, 2) of the filled squares, row by row from the bottom left."""
    half = BOARD_SIZE / 2
    return torch.tensor([[col - half, row - half] for row in range(BOARD_SIZE)
                         for col in range(BOARD_SIZE) if (col + row) % 2 == 0], dtype=torch.float64)


def _checkerboard(n: int, g: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    corners = _filled_squares()
    y = torch.randint(0, len(corners), (n,), generator=g)
    return corners[y] + _uniform(n, 2, g=g), y


_RAW_SAMPLERS = {"two_moons": _two_moons, "swiss_roll": _swiss_roll,
                 "eight_gaussians": _eight_gaussians, "checkerboard": _checkerboard}


# ----------------------------------------------------------------------------- exact moments

def _moons_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    """Mean and std per axis of the raw moons: an equal mixture of the two arcs plus noise.

    t ~ U[0, pi]: E cos t = 0, E sin t = 2/pi, E cos^2 t = E sin^2 t = 1/2. Axis 0: arc means 0
    and 1, within-arc variance 1/2, so Var = 1/2 + 1/4. Axis 1: arc means 2/pi and 1/2 - 2/pi,
    within variance 1/2 - 4/pi^2, between variance (2/pi - 1/4)^2.
    """
    var0 = 0.5 + 0.25 + MOONS_NOISE**2
    var1 = 0.5 - 4 / math.pi**2 + (2 / math.pi - 0.25) ** 2 + MOONS_NOISE**2
    return (0.5, 0.25), (math.sqrt(var0), math.sqrt(var1))


def _roll_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    """Mean and std per axis of the raw swiss roll, t ~ U[a, b] with a = 3pi/2, b = 9pi/2.

    Integrating by parts over [a, b] (cos a = cos b = 0, sin a = -1, sin b = 1):
    E[t cos t] = (b + a) / (b - a) = 2, E[t sin t] = 2 / (b - a) = 2 / (3 pi),
    E[t^2 cos^2 t] = (b^3 - a^3) / (6 (b - a)) - 1/4, E[t^2 sin^2 t] = the same + 1/4.
    """
    a, b = 1.5 * math.pi, 4.5 * math.pi
    mean = ((b + a) / (b - a), 2 / (b - a))
    t2 = (b**3 - a**3) / (6 * (b - a))
    var = (t2 - 0.25 - mean[0] ** 2 + ROLL_NOISE**2, t2 + 0.25 - mean[1] ** 2 + ROLL_NOISE**2)
    return mean, (math.sqrt(var[0]), math.sqrt(var[1]))


def _gaussians_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    """Mean 0 by symmetry; Var = r^2 * mean of cos^2 over the 8 angles (= 1/2) + sigma^2."""
    std = math.sqrt(GAUSS_RADIUS**2 / 2 + GAUSS_STD**2)
    return (0.0, 0.0), (std, std)


def _board_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    """Each column and each row holds 2 filled squares, so each axis is U[-2, 2]: Var = 4^2 / 12."""
    std = BOARD_SIZE / math.sqrt(12)
    return (0.0, 0.0), (std, std)


_RAW_MOMENTS = {"two_moons": _moons_moments(), "swiss_roll": _roll_moments(),
                "eight_gaussians": _gaussians_moments(), "checkerboard": _board_moments()}
