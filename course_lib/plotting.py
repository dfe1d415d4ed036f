"""The course's recurring pictures: point clouds, densities, score fields, image grids,
loss curves and trajectories.

Every function takes an optional `ax` (a new figure is made when it is None) and returns the
Axes it drew on, so pictures compose: `ax = density2d(log_prob); scatter2d(x, ax=ax)`.
Data may be torch tensors (any device, with or without grad) or NumPy arrays.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes

from ._checks import check_positive_int, check_tensor

ArrayLike = torch.Tensor | np.ndarray
_CHUNK = 16_384  # grid points per call of a user function


# ---------------------------------------------------------------- helpers

def _as_tensor(name: str, x, **checks) -> torch.Tensor:
    """A tensor / array / list as a detached float32 CPU tensor, checked with `check_tensor`."""
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, torch.Tensor) for v in x):
        x = torch.stack([v.detach().cpu() for v in x])  # T snapshots / 0-d losses -> (T, ...)
    if isinstance(x, (np.ndarray, list, tuple)):
        x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or NumPy array, got {type(x).__name__}")
    check_tensor(name, x, **checks)
    return x.detach().cpu().float()


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4.0, 4.0)) -> Axes:
    """`ax` itself, or the Axes of a new figure."""
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    elif not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    return ax


def _finish(ax: Axes, title: str | None, lim: float | None = None) -> Axes:
    """Set the title and, if `lim` is given, the square limits [-lim, lim]^2."""
    if title is not None:
        ax.set_title(title)
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    return ax


def _fn_device(fn: Callable) -> torch.device:
    """The device of `fn`'s parameters if it is an nn.Module or a method of one, else CPU."""
    owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        p = next(owner.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


def _grid(lim: float, n: int) -> torch.Tensor:
    """The (n*n, 2) points of an n x n grid on [-lim, lim]^2, row-major with rows along y."""
    lim = float(lim)
    if not lim > 0:
        raise ValueError(f"lim must be > 0, got {lim}")
    v = torch.linspace(-lim, lim, check_positive_int("n", n))
    yy, xx = torch.meshgrid(v, v, indexing="ij")  # (n, n): row i has y = v[i]
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def _apply(name: str, fn: Callable, pts: torch.Tensor, device, out_shape: tuple) -> torch.Tensor:
    """fn on `pts` in chunks, on `device`; the output checked to have shape (M, *out_shape)."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
    device = _fn_device(fn) if device is None else torch.device(device)
    outs = []
    for chunk in pts.split(_CHUNK):
        y = _as_tensor(f"{name}'s output", fn(chunk.to(device)))
        if tuple(y.shape) != (len(chunk), *out_shape):
            want = ", ".join(["M", *map(str, out_shape)])
            raise ValueError(f"{name} must map (M, 2) points to shape ({want},), "
                             f"got {tuple(y.shape)} for M = {len(chunk)}")
        outs.append(y)
    return torch.cat(outs)


# ---------------------------------------------------------------- pictures

def scatter2d(x: ArrayLike, ax: Axes | None = None, *, c=None, s: float = 2,
              alpha: float = 0.5, title: str | None = None, lim: float | None = None) -> Axes:
    """Scatter a (N, 2) point cloud with equal aspect; `c` colours points (e.g. labels)."""
    x = _as_tensor("x", x, ndim=2, last_dim=2).numpy()
    if isinstance(c, torch.Tensor):
        c = c.detach().cpu().numpy()
    ax = _axes(ax)
    ax.scatter(x[:, 0], x[:, 1], c=c, s=s, alpha=alpha, linewidths=0)
    ax.set_aspect("equal")
    return _finish(ax, title, lim)


def density2d(log_prob: Callable[[torch.Tensor], torch.Tensor], ax: Axes | None = None, *,
              lim: float = 3.0, n: int = 200, title: str | None = None,
              device: str | torch.device | None = None) -> Axes:
    """Image of p(x) = exp(log_prob(x)) on an n x n grid over [-lim, lim]^2.

    `log_prob` maps (M, 2) points to (M,) log-densities; it is called in chunks under
    torch.no_grad(), on `device` (default: the device of `log_prob`'s module, else CPU).
    """
    pts = _grid(lim, n)
    with torch.no_grad():
        lp = _apply("log_prob", log_prob, pts, device, ())
    ax = _axes(ax)
    lim = float(lim)
    ax.imshow(lp.exp().reshape(n, n).numpy(), origin="lower", extent=(-lim, lim, -lim, lim),
              cmap="viridis", interpolation="nearest")
    return _finish(ax, title)


def vector_field(fn: Callable[[torch.Tensor], torch.Tensor], ax: Axes | None = None, *,
                 lim: float = 3.0, n: int = 20, title: str | None = None,
                 normalize: bool = False, device: str | torch.device | None = None) -> Axes:
    """Quiver plot of a vector field fn: (M, 2) -> (M, 2) on an n x n grid, e.g. a score.

    `fn` runs with autograd enabled, so a score computed as the gradient of a log-density
    works; `normalize=True` draws unit arrows (direction only).
    """
    pts = _grid(lim, n)
    vec = _apply("fn", fn, pts, device, (2,))
    if normalize:
        vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    ax = _axes(ax)
    ax.quiver(pts[:, 0].numpy(), pts[:, 1].numpy(), vec[:, 0].numpy(), vec[:, 1].numpy())
    ax.set_aspect("equal")
    return _finish(ax, title, float(lim) * 1.05)


def _tile(x: torch.Tensor, nrow: int) -> torch.Tensor:
    """(B, H, W) images -> one (rows * H, nrow * W) image, row-major, blank-padded."""
    b, h, w = x.shape
    rows = math.ceil(b / nrow)
    x = F.pad(x, (0, 0, 0, 0, 0, rows * nrow - b))  # (rows * nrow, H, W)
    return x.reshape(rows, nrow, h, w).permute(0, 2, 1, 3).reshape(rows * h, nrow * w)


def image_grid(x: ArrayLike, ax: Axes | None = None, *, nrow: int | None = None,
               title: str | None = None, value_range: tuple[float, float] | None = None) -> Axes:
    """Show (B, 1, H, W) or (B, H, W) images as one grid, `nrow` images per row.

    `value_range` = (lo, hi) maps [lo, hi] to [0, 1], e.g. (-1, 1) for diffusion samples; if
    None it is guessed: (-1, 1) when any value is negative, else (0, 1). Then clamped to [0, 1]
    and drawn in gray, without ticks.
    """
    x = _as_tensor("x", x, ndim=(3, 4))
    if x.ndim == 4 and x.shape[1] != 1:
        raise ValueError(f"x must have 1 channel, shape (B, 1, H, W); got {tuple(x.shape)}")
    x = x.reshape(-1, *x.shape[-2:])  # (B, H, W)
    if len(x) == 0:
        raise ValueError("x must hold at least one image, got B = 0")
    nrow = math.ceil(math.sqrt(len(x))) if nrow is None else check_positive_int("nrow", nrow)
    if value_range is None:
        value_range = (-1.0, 1.0) if x.min() < 0 else (0.0, 1.0)
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range}")
    x = (x - lo) / (hi - lo)
    grid = _tile(x.clamp(0, 1), min(nrow, len(x)))
    h, w = grid.shape
    ax = _axes(ax, figsize=(min(12.0, w / 40 + 0.5), min(12.0, h / 40 + 0.5)))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return _finish(ax, title)


def _moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Mean of each run of `window` consecutive values: len(y) - window + 1 values."""
    return np.convolve(y, np.ones(window) / window, mode="valid")


def _wants_log_scale(y: np.ndarray) -> bool:
    """True when the finite values are all positive and span more than two decades."""
    y = y[np.isfinite(y)]
    return bool(len(y)) and y.min() > 0 and y.max() > 100 * y.min()


def loss_curve(history: ArrayLike | Sequence[float], ax: Axes | None = None, *,
               smooth: int | None = None, logy: bool | None = None,
               title: str | None = "training loss", label: str | None = None) -> Axes:
    """The raw loss per step (thin, light) and its moving average over `smooth` steps.

    Several runs can share one `ax`: each gets the next colour and, with `label`, a legend entry.

    `history` is a sequence of floats or 0-d tensors, or a 1-D tensor / array.
    `smooth` defaults to len(history) // 50 (at least 1); `logy` defaults to a log scale
    when every loss is positive and they span more than two decades.
    """
    y = _as_tensor("history", history, ndim=1).double().numpy()
    if len(y) == 0:
        raise ValueError("history must hold at least one loss value, got an empty sequence")
    window = max(1, len(y) // 50) if smooth is None else check_positive_int("smooth", smooth)
    window = min(window, len(y))
    steps = np.arange(len(y))
    ax = _axes(ax, figsize=(6.0, 3.5))
    color = f"C{len(ax.lines) // 2}"
    ax.plot(steps, y, lw=0.7, alpha=0.35, color=color, label="_raw" if label else "loss")
    ax.plot(steps[window - 1:], _moving_average(y, window), lw=1.8, color=color,
            label=label or f"moving average ({window})")
    if _wants_log_scale(y) if logy is None else logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(frameon=False)
    return _finish(ax, title)


def trajectories(xs: ArrayLike | Sequence[torch.Tensor], ax: Axes | None = None, *,
                 t: ArrayLike | None = None, color=None, alpha: float = 0.6, lw: float = 1.0,
                 title: str | None = None) -> Axes:
    """Lines for N trajectories: (T, N) values over time, or (T, N, 2) paths in the plane.

    `xs` may also be a list of T tensors (N,) or (N, 2), e.g. the snapshots a sampler returns.
    For (T, N) the x axis is `t` (default 0..T-1); for (T, N, 2) the end points are marked.
    """
    xs = _as_tensor("xs", xs, ndim=(2, 3))
    if xs.ndim == 3 and xs.shape[-1] != 2:
        raise ValueError(f"xs must have shape (T, N) or (T, N, 2), got {tuple(xs.shape)}")
    ax = _axes(ax)
    if xs.ndim == 2:
        t = torch.arange(len(xs)) if t is None else _as_tensor("t", t, ndim=1)
        if len(t) != len(xs):
            raise ValueError(f"t must have length T = {len(xs)}, got {len(t)}")
        ax.plot(t.numpy(), xs.numpy(), color=color, alpha=alpha, lw=lw)
        ax.set_xlabel("t")
        return _finish(ax, title)
    ax.plot(xs[..., 0].numpy(), xs[..., 1].numpy(), color=color, alpha=alpha, lw=lw)
    ax.scatter(xs[-1, :, 0].numpy(), xs[-1, :, 1].numpy(), s=6, c="k", zorder=3)
    ax.set_aspect("equal")
    return _finish(ax, title)
