"""Weights themselves: a difference heatmap, a histogram of changes, weight trajectories.

Tensors are matched by neuron ID across surgery (as in comparisons). Histograms and
trajectories subsample large models (a fixed seed, so plots are reproducible).

>>> import torch.nn as nn
>>> from engine.weights.weight_snapshot import capture_weights
>>> a, b = capture_weights(nn.Linear(4, 3), step=0), capture_weights(nn.Linear(4, 3), step=1)
>>> figure_texts(plot_weight_heatmap(a, b, "weight"))["ylabel"][0]
'output unit (row)'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from engine.weights.align import align_tensor
from engine.weights.errors import WeightPlotError
from engine.weights.plots._figure import entries_of, figure_texts, new_figure, save_png, timeline
from engine.weights.weight_snapshot import WeightSnapshot

__all__ = [
    "figure_texts",
    "plot_change_histogram",
    "plot_weight_heatmap",
    "plot_weight_trajectories",
]


def _matrix(delta: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A 2-D view of a change: conv kernels reduced to one L2 value per (filter, input)."""
    d = delta.detach().to(torch.float64)
    if d.dim() <= 1:
        return d.reshape(1, -1).numpy(), False
    if d.dim() == 2:
        return d.numpy(), False
    return torch.linalg.vector_norm(d.flatten(2), dim=2).numpy(), True


def plot_weight_heatmap(
    a: WeightSnapshot, b: WeightSnapshot, tensor: str, path: str | Path | None = None
) -> Figure:
    """ΔW of one tensor between snapshots ``a`` and ``b`` (rows: output units / filters)."""
    pair = align_tensor(tensor, a, b)
    if not pair.a.is_floating_point():
        raise WeightPlotError(f"tensor {tensor!r} is not floating point ({pair.a.dtype})")
    m, reduced = _matrix(pair.b.to(torch.float64) - pair.a.to(torch.float64))
    fig = new_figure(6.5, 5.0)
    ax = fig.add_subplot()
    if reduced:
        img = ax.imshow(m, aspect="auto", cmap="viridis", interpolation="nearest")
        cbar = "‖ΔK‖ per kernel"
    else:
        lim = float(np.abs(m).max()) or 1.0
        img = ax.imshow(
            m, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest"
        )
        cbar = "ΔW"
    fig.colorbar(img, ax=ax, label=cbar)
    ax.set(
        title=f"Weight change of {tensor}: #{a.seq} → #{b.seq}",
        xlabel="input channel" if reduced else "input (column)",
        ylabel="output filter" if reduced else "output unit (row)",
    )
    save_png(fig, path)
    return fig


def _sample(x: torch.Tensor, limit: int, seed: int) -> torch.Tensor:
    if x.numel() <= limit:
        return x
    g = torch.Generator().manual_seed(seed)
    return x[torch.randint(x.numel(), (limit,), generator=g)]


def plot_change_histogram(
    a: WeightSnapshot,
    b: WeightSnapshot,
    tensors: Sequence[str] | None = None,
    path: str | Path | None = None,
    bins: int = 100,
    max_samples: int = 200_000,
    seed: int = 0,
) -> Figure:
    """Histogram of ΔW over ``tensors`` (default: every floating parameter in both)."""
    names = list(tensors) if tensors is not None else [
        n for n in a.entry.parameters if n in b.entry.shapes
    ]  # fmt: skip
    la, lb = a.cached(), b.cached()
    deltas = []
    for name in names:
        pair = align_tensor(name, la, lb)
        if pair.a.is_floating_point():
            deltas.append((pair.b.float() - pair.a.float()).reshape(-1))
    if not deltas:
        raise WeightPlotError(f"no floating tensor to compare among {names[:6]}")
    d = torch.cat(deltas)
    sample = _sample(d, max_samples, seed).to(torch.float64).numpy()
    counts, edges = np.histogram(sample, bins=bins)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.stairs(counts, edges, fill=True, alpha=0.8)
    ax.set_yscale("log" if counts.max() > 100 * max(1, np.median(counts[counts > 0])) else "linear")
    shown = f"{sample.size:,} of {d.numel():,}" if sample.size < d.numel() else f"{d.numel():,}"
    ax.set(
        title=f"Distribution of weight changes: #{a.seq} → #{b.seq}",
        xlabel="ΔW",
        ylabel=f"count ({shown} weights)",
    )
    save_png(fig, path)
    return fig


def _positions(snap: WeightSnapshot, tensor: str, keys: list[np.ndarray]) -> np.ndarray:
    """Flat index of each sampled entry in ``snap``'s tensor (−1 where the unit is gone)."""
    shape = snap.entry.shapes[tensor]
    axes = {x.dim: x for x in snap.entry.axes.get(tensor, ())}
    idx = np.zeros(keys[0].shape[0], dtype=np.int64)
    alive = np.ones_like(idx, dtype=bool)
    for dim, size in enumerate(shape):
        axis = axes.get(dim)
        if axis is None or axis.layer not in snap.entry.neuron_ids:
            pos = keys[dim][:, 1]
        else:
            ids = snap.ids(axis.layer)
            if len(ids) == 0:
                return np.full_like(idx, -1)
            order = np.argsort(ids, kind="stable")
            at = np.searchsorted(ids, keys[dim][:, 0], sorter=order).clip(0, len(ids) - 1)
            unit = order[at]
            alive &= ids[unit] == keys[dim][:, 0]
            pos = unit * axis.columns_per_unit + keys[dim][:, 1]
        alive &= pos < size
        idx = idx * size + np.where(alive, pos, 0)
    return np.where(alive, idx, -1)


def _keys(snap: WeightSnapshot, tensor: str, flat: np.ndarray) -> list[np.ndarray]:
    """Per axis ``(unit ID or -1, offset)`` of each sampled entry: identity across surgery."""
    shape = snap.entry.shapes[tensor]
    axes = {x.dim: x for x in snap.entry.axes.get(tensor, ())}
    coords = np.unravel_index(flat, shape)
    keys = []
    for dim, c in enumerate(coords):
        axis = axes.get(dim)
        if axis is None or axis.layer not in snap.entry.neuron_ids:
            keys.append(np.stack([np.full_like(c, -1), c], axis=1))
        else:
            cpu = axis.columns_per_unit
            keys.append(np.stack([snap.ids(axis.layer)[c // cpu], c % cpu], axis=1))
    return keys


def plot_weight_trajectories(
    snapshots: Sequence[WeightSnapshot],
    tensor: str,
    count: int = 12,
    path: str | Path | None = None,
    seed: int = 0,
) -> Figure:
    """Values of ``count`` sampled weights of ``tensor`` over the snapshots (followed by neuron
    ID across surgery; a gap once their unit is gone), and the tensor's norm and mean |W|."""
    if len(snapshots) < 2:
        raise WeightPlotError("weight trajectories need at least two snapshots")
    first = snapshots[0]
    first._check(tensor)
    numel = int(np.prod(first.entry.shapes[tensor]))
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(numel, size=min(count, numel), replace=False))
    keys = _keys(first, tensor, flat)
    values = np.full((len(snapshots), flat.size), np.nan)
    norms, mean_abs = np.full(len(snapshots), np.nan), np.full(len(snapshots), np.nan)
    for t, snap in enumerate(snapshots):
        if tensor not in snap.entry.shapes:
            continue
        w = snap.tensor(tensor).detach().to(torch.float64).reshape(-1)
        pos = _positions(snap, tensor, keys)
        ok = pos >= 0
        values[t, ok] = w[torch.from_numpy(pos[ok])].numpy()
        norms[t], mean_abs[t] = float(w.norm()), float(w.abs().mean())
    x, xlabel = timeline(entries_of(snapshots))
    fig = new_figure(7.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(x, values, lw=1, marker=".", ms=3)
    top.set(title=f"Weight trajectories of {tensor} ({flat.size} sampled)", ylabel="weight value")
    bottom.plot(x, norms, label="‖W‖₂", color="k")
    twin = bottom.twinx()
    twin.plot(x, mean_abs, label="mean |W|", color="tab:blue", ls="--")
    twin.set_ylabel("mean |W|")
    bottom.set(title="Aggregate", xlabel=xlabel, ylabel="‖W‖₂")
    save_png(fig, path)
    return fig
