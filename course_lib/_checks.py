"""Argument checks for the public boundary of `course_lib`.

Every public function validates what a learner passes in and raises a `TypeError` or
`ValueError` that names the argument and says what was expected, instead of failing deep
inside PyTorch with a shape error.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch


def check_tensor(name: str, value, *, ndim: int | Sequence[int] | None = None,
                 last_dim: int | None = None, floating: bool = False) -> torch.Tensor:
    """Check that `value` is a tensor with the given rank / trailing size / float dtype."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    if last_dim is not None and (value.ndim == 0 or value.shape[-1] != last_dim):
        raise ValueError(f"{name} must have last dimension {last_dim}, got shape {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value


def check_same_device(**tensors: torch.Tensor) -> None:
    """Check that all the named tensors live on one device."""
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"tensors must be on the same device, got {listing}")


def check_positive_int(name: str, value) -> int:
    """Check that `value` is an int >= 1 (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_in_range(name: str, value: float, low: float, high: float, *,
                   low_open: bool = False, high_open: bool = False) -> float:
    """Check low <= value <= high (with open ends where asked); accepts Python or 0-d numbers."""
    v = float(value)
    bad_low = v <= low if low_open else v < low
    bad_high = v >= high if high_open else v > high
    if bad_low or bad_high or v != v:
        lb, rb = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {lb}{low}, {high}{rb}, got {value}")
    return v


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Check that `value` is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
