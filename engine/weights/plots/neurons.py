"""Neuron-level views: activity over epochs (from the training history) and the correlation
matrix of a layer's units (from a statistics snapshot with correlation on).

>>> import torch
>>> from engine.history import TrainingHistory
>>> from engine.stats import Moments
>>> h = TrainingHistory()
>>> for e in range(3):
...     _ = h.log(e, {"fc": ([0, 1, 2][: 3 - e], Moments.from_samples(torch.rand(8, 3 - e)))})
>>> fig = plot_neuron_activity(h, "fc")
>>> figure_texts(fig)["title"]
['Neuron activity of fc: firing_rate per epoch']
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from engine.weights.errors import WeightPlotError
from engine.weights.plots._figure import figure_texts, new_figure, save_png

__all__ = ["figure_texts", "plot_correlation", "plot_neuron_activity"]
FIELDS = ("firing_rate", "mean", "variance")


def activity_matrix(history: Any, layer: str, field: str = "firing_rate"):
    """``(neuron IDs, epochs, values)``: one row per neuron ever seen in ``layer``, one column
    per logged epoch, NaN where the neuron was not alive (removed, or not yet grown)."""
    if field not in FIELDS:
        raise WeightPlotError(f"field must be one of {FIELDS}, got {field!r}")
    records = [r for r in history.records if layer in r.layers]
    if not records:
        raise WeightPlotError(f"layer {layer!r} appears in no logged epoch of the history")
    all_ids = np.unique(
        np.concatenate([np.asarray(r.layers[layer]["neuron_ids"]) for r in records])
    )
    values = np.full((all_ids.size, len(records)), np.nan)
    for j, r in enumerate(records):
        data = r.layers[layer]
        rows = np.searchsorted(all_ids, np.asarray(data["neuron_ids"], dtype=np.int64))
        values[rows, j] = np.array(data[field], dtype=np.float64)  # None → nan
    return all_ids, [r.epoch for r in records], values


def plot_neuron_activity(
    history: Any, layer: str, field: str = "firing_rate", path: str | Path | None = None
) -> Figure:
    """Heatmap of one statistic per neuron (rows, by ID) and epoch (columns)."""
    ids, epochs, values = activity_matrix(history, layer, field)
    fig = new_figure(7.0, 5.0)
    ax = fig.add_subplot()
    img = ax.imshow(
        np.ma.masked_invalid(values), aspect="auto", interpolation="nearest", cmap="magma",
        extent=(-0.5, len(epochs) - 0.5, len(ids) - 0.5, -0.5),
    )  # fmt: skip
    fig.colorbar(img, ax=ax, label=field)
    step = max(1, len(epochs) // 10)
    ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
    rstep = max(1, len(ids) // 10)
    ax.set_yticks(range(0, len(ids), rstep), [str(i) for i in ids[::rstep]])
    ax.set(
        title=f"Neuron activity of {layer}: {field} per epoch", xlabel="epoch", ylabel="neuron ID"
    )
    save_png(fig, path)
    return fig


def plot_correlation(layer_snapshot: Any, path: str | Path | None = None) -> Figure:
    """Pearson correlation of a layer's units (a ``LayerSnapshot`` tracked with correlation)."""
    if getattr(layer_snapshot, "comoments", None) is None:
        raise WeightPlotError(
            f"layer {getattr(layer_snapshot, 'name', '?')!r} has no co-moments: create the "
            f"NeuronEngine with correlation=True (or a list of layers)"
        )
    r = layer_snapshot.pearson().to("cpu").numpy()
    fig = new_figure(6.0, 5.0)
    ax = fig.add_subplot()
    img = ax.imshow(
        np.ma.masked_invalid(r), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest"
    )
    fig.colorbar(img, ax=ax, label="Pearson r")
    ax.set(
        title=f"Correlation of {layer_snapshot.name} units",
        xlabel="unit (local index)",
        ylabel="unit (local index)",
    )
    save_png(fig, path)
    return fig
