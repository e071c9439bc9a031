"""Change over time: the model's total change and each layer's, between consecutive snapshots.

>>> import torch.nn as nn
>>> from engine.weights.weight_snapshot import capture_weights
>>> from engine.weights.compare import compare_series
>>> m = nn.Linear(2, 2)
>>> snaps = [capture_weights(m, step=0), capture_weights(nn.Linear(2, 2), step=5)]
>>> fig = plot_total_change(compare_series(snaps))
>>> figure_texts(fig)["title"], figure_texts(fig)["xlabel"]
(['Total weight change between snapshots'], ['step'])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from engine.weights.compare import WeightComparison
from engine.weights.errors import WeightPlotError
from engine.weights.metrics import ChangeSums
from engine.weights.plots._figure import figure_texts, new_figure, save_png, timeline

METRICS = {
    "l2": "L2 change ‖ΔW‖",
    "l1": "L1 change Σ|ΔW|",
    "relative": "relative change ‖ΔW‖/‖W‖",
    "cosine_distance": "cosine distance",
}
__all__ = ["figure_texts", "plot_layer_change", "plot_total_change"]


def _metric(metric: str) -> str:
    if metric not in METRICS:
        raise WeightPlotError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    return METRICS[metric]


def _value(sums: ChangeSums, metric: str) -> float:
    return float(getattr(sums, metric))


def _x(comparisons: Sequence[WeightComparison]) -> tuple[list[float], str]:
    if not comparisons:
        raise WeightPlotError("no comparisons to plot: take at least two snapshots")
    return timeline([c.b for c in comparisons])


def plot_total_change(
    comparisons: Sequence[WeightComparison], metric: str = "l2", path: str | Path | None = None
) -> Figure:
    """Total change of each consecutive comparison, at the later snapshot's time."""
    label = _metric(metric)
    x, xlabel = _x(comparisons)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(x, [_value(c.total, metric) for c in comparisons], marker="o", ms=3)
    ax.set(title="Total weight change between snapshots", xlabel=xlabel, ylabel=label)
    ax.grid(alpha=0.3)
    save_png(fig, path)
    return fig


def plot_layer_change(
    comparisons: Sequence[WeightComparison],
    metric: str = "l2",
    path: str | Path | None = None,
    by: str = "module",
) -> Figure:
    """One line per module (``by="module"``) or per tensor (``by="tensor"``)."""
    label = _metric(metric)
    x, xlabel = _x(comparisons)
    if by not in ("module", "tensor"):
        raise WeightPlotError(f"by must be 'module' or 'tensor', got {by!r}")
    series: dict[str, list[float]] = {}
    for i, c in enumerate(comparisons):
        parts = c.by_module() if by == "module" else {n: t.sums for n, t in c.tensors.items()}
        for name, sums in parts.items():
            series.setdefault(name, [float("nan")] * len(comparisons))[i] = _value(sums, metric)
    fig = new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    for name, ys in series.items():
        ax.plot(x, ys, marker="o", ms=2, label=name or "(root)")
    ax.set(title=f"Weight change per {by} between snapshots", xlabel=xlabel, ylabel=label)
    ax.grid(alpha=0.3)
    if len(series) <= 20:
        ax.legend(fontsize="small", ncol=2 if len(series) > 8 else 1)
    save_png(fig, path)
    return fig
