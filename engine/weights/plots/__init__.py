"""Matplotlib figures of a weight-tracking run (Agg, never pyplot: nothing global to close).

Every ``plot_*`` function returns the :class:`~matplotlib.figure.Figure` and, given ``path``,
writes it as PNG atomically. :func:`plot_run` writes the summary set of a tracker's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.weights.plots._figure import figure_texts
from engine.weights.plots.architecture import plot_architecture_timeline
from engine.weights.plots.change import plot_layer_change, plot_total_change
from engine.weights.plots.neurons import plot_correlation, plot_neuron_activity
from engine.weights.plots.weights import (
    plot_change_histogram,
    plot_weight_heatmap,
    plot_weight_trajectories,
)

__all__ = [
    "figure_texts",
    "plot_architecture_timeline",
    "plot_change_histogram",
    "plot_correlation",
    "plot_layer_change",
    "plot_neuron_activity",
    "plot_run",
    "plot_total_change",
    "plot_weight_heatmap",
    "plot_weight_trajectories",
]


def plot_run(tracker: Any, out_dir: str | Path | None = None) -> dict[str, Path]:
    """The summary plots of a ``WeightTracker``'s run, under ``out_dir`` (default
    ``<run_dir>/plots``): total and per-layer change, change histogram (first → last), the
    architecture timeline when neuron IDs were recorded, and the neuron activity of each layer
    when the engine logged epochs. Returns name → PNG path."""
    out = Path(out_dir) if out_dir is not None else tracker.run_dir / "plots"
    snaps = tracker.snapshots()
    written: dict[str, Path] = {}
    if len(snaps) >= 2:
        series = tracker.compare_consecutive(on_unaligned="skip")
        for name, fn in (("total_change", plot_total_change), ("layer_change", plot_layer_change)):
            written[name] = out / f"{name}.png"
            fn(series, path=written[name])
        written["change_histogram"] = out / "change_histogram.png"
        plot_change_histogram(snaps[0], snaps[-1], path=written["change_histogram"])
    if snaps and snaps[-1].entry.neuron_ids:
        written["architecture"] = out / "architecture.png"
        plot_architecture_timeline(snaps, tracker.changes(), path=written["architecture"])
    history = getattr(tracker.engine, "history", None)
    for layer in tracker.engine.layers if history is not None and len(history) else ():
        written[f"activity_{layer}"] = out / f"activity_{layer.replace('.', '_')}.png"
        plot_neuron_activity(history, layer, path=written[f"activity_{layer}"])
    return written
