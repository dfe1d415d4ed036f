"""Numerical check cells: print a closed form next to its independent check, and assert.

Every key result in the notebooks is followed by a cell that computes it twice, once by the
formula and once independently (Monte Carlo, exact enumeration, autograd, a reference library),
prints the discrepancy and fails loudly if it is too large.
"""
from __future__ import annotations

import torch


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x.detach() if isinstance(x, torch.Tensor) else x, dtype=torch.float64)


def check_close(what: str, value, reference, *, atol: float = 1e-6, rtol: float = 1e-5) -> float:
    """Assert |value - reference| <= atol + rtol |reference| elementwise; print the max error."""
    v, r = _as_tensor(value), _as_tensor(reference)
    if v.shape != r.shape:
        raise ValueError(f"value and reference must have one shape, got {tuple(v.shape)} and "
                         f"{tuple(r.shape)} for {what!r}")
    err = (v - r).abs()
    worst = float(err.max()) if err.numel() else 0.0
    ok = bool((err <= atol + rtol * r.abs()).all())
    print(f"{'OK  ' if ok else 'FAIL'} {what}: max |difference| = {worst:.3g} "
          f"(tolerance {atol:g} + {rtol:g} x |reference|)")
    if not ok:
        raise AssertionError(f"check failed: {what}: max |difference| {worst:.3g}")
    return worst


def check_within_se(what: str, estimate, exact, standard_error, *, k: float = 4.0) -> float:
    """Assert a Monte Carlo estimate lies within k standard errors of the exact value."""
    e, x, se = _as_tensor(estimate), _as_tensor(exact), _as_tensor(standard_error)
    z = float(((e - x).abs() / se).max())
    ok = z <= k
    print(f"{'OK  ' if ok else 'FAIL'} {what}: estimate {_fmt(e)} vs exact {_fmt(x)}, "
          f"{z:.2f} standard errors apart (allowed {k:g})")
    if not ok:
        raise AssertionError(f"check failed: {what}: {z:.2f} standard errors apart")
    return z


def _fmt(t: torch.Tensor) -> str:
    return f"{float(t):.5g}" if t.numel() == 1 else "[" + ", ".join(f"{float(v):.4g}" for v in t.flatten()) + "]"
