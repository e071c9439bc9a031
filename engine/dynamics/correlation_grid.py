"""The all-pairs layer cross-correlation grid: for every two layers, the Pearson correlation of
every unit of one with every unit of the other on the same samples, drawn as one grid of
heatmaps (the "matrix of correlation matrices" of the earlier analysis tools).

The diagonal cells are each layer's own unit × unit correlation; cell (i, j) below it is layer
i's units (rows) against layer j's (columns). Units are the columns of each layer's
``(samples, units)`` output (capture it with ``engine.dynamics.capture_outputs``); wide layers
are shown by their first ``max_units`` units. Constant units have no correlation (blank).

>>> import tempfile, torch
>>> from pathlib import Path
>>> x = torch.randn(64, 3)
>>> reps = {"a": x, "b": torch.cat([x, -x], dim=1)}
>>> grid = cross_correlation_grid(reps)
>>> grid[("b", "a")].shape, round(float(grid[("b", "a")][3, 0]), 6)
((6, 3), -1.0)
>>> plot_cross_correlation_grid(reps, Path(tempfile.mkdtemp()) / "grid.png").stat().st_size > 0
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from engine.dynamics.errors import DynamicsError
from engine.dynamics.plots import _save

__all__ = ["cross_correlation_grid", "plot_cross_correlation_grid"]


def _standardised(name: str, rep: torch.Tensor, max_units: int, n: int | None) -> np.ndarray:
    x = rep.detach().to("cpu", torch.float64)
    if x.dim() != 2:
        x = x.reshape(x.shape[0], -1)
    if n is not None and x.shape[0] != n:
        raise DynamicsError(f"layer {name!r} has {x.shape[0]} samples, the first layer has {n}")
    x = x[:, :max_units]
    x = x - x.mean(0, keepdim=True)
    norm = x.norm(dim=0, keepdim=True)
    return torch.where(norm > 0, x / norm, torch.full_like(x, float("nan"))).numpy()


def cross_correlation_grid(
    representations: Mapping[str, torch.Tensor], *, max_units: int = 64
) -> dict[tuple[str, str], np.ndarray]:
    """``{(layer_i, layer_j): units_i × units_j Pearson correlation}`` for every pair with
    ``i ≥ j`` in the order given (the lower triangle and the diagonal of the grid)."""
    if not representations:
        raise DynamicsError("cross_correlation_grid needs at least one layer's outputs")
    names = list(representations)
    first = representations[names[0]]
    if first.shape[0] < 2:
        raise DynamicsError(f"correlation needs ≥ 2 samples, got {first.shape[0]}")
    z = {name: _standardised(name, representations[name], max_units, first.shape[0])
         for name in names}  # fmt: skip
    return {(a, b): z[a].T @ z[b] for i, a in enumerate(names) for b in names[: i + 1]}


def plot_cross_correlation_grid(
    representations: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    max_units: int = 64,
    title: str = "",
) -> Path:
    """Draw :func:`cross_correlation_grid` as an L × L grid (upper triangle left empty), one
    colour scale from −1 to 1; returns the PNG's path."""
    grid = cross_correlation_grid(representations, max_units=max_units)
    names = list(representations)
    size = max(3.0, 1.8 * len(names))
    fig = Figure(figsize=(size + 1.0, size))
    axes = fig.subplots(len(names), len(names), squeeze=False)
    image = None
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j > i:
                ax.axis("off")
                continue
            image = ax.imshow(grid[(a, b)], cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto",
                              interpolation="nearest")  # fmt: skip
            if j == 0:
                ax.set_ylabel(a, fontsize=8)
            if i == len(names) - 1:
                ax.set_xlabel(b, fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.6, label="Pearson correlation")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
