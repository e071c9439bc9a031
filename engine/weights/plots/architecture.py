"""The architecture timeline: each tracked layer's width over training, with surgery marked.

Widths come from the snapshots' neuron IDs (no tensor is read); events from the change log,
placed at the snapshot taken right after them.

>>> import torch.nn as nn
>>> from engine.neurons import NeuronRegistry
>>> from engine.weights.weight_snapshot import capture_weights
>>> reg = NeuronRegistry(); _ = reg.add_layer("0", 4)
>>> s0 = capture_weights(nn.Linear(2, 4), step=0, neuron_ids=reg.as_dict())
>>> _ = reg.remove("0", [1])
>>> s1 = capture_weights(nn.Linear(2, 3), step=10, neuron_ids=reg.as_dict())
>>> figure_texts(plot_architecture_timeline([s0, s1]))["ylabel"]
['units']
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from engine.weights.errors import WeightPlotError
from engine.weights.plots._figure import (
    EVENT_COLORS,
    entries_of,
    figure_texts,
    new_figure,
    save_png,
    timeline,
)

__all__ = ["figure_texts", "plot_architecture_timeline"]


def _event_x(change: Any, seq_x: dict[int, float], xlabel: str) -> float | None:
    if change.snapshot_after is not None and change.snapshot_after in seq_x:
        return seq_x[change.snapshot_after]
    value = change.step if xlabel == "step" else change.epoch if xlabel == "epoch" else None
    return None if value is None else float(value)


def plot_architecture_timeline(
    snapshots: Sequence[Any], changes: Sequence[Any] = (), path: str | Path | None = None
) -> Figure:
    """Width of every tracked layer per snapshot (a step line), with a vertical mark per
    surgery action (``ChangeEntry``), coloured by kind (prune, merge, fold, expand); actions of
    trials that were rolled back are not drawn."""
    entries = entries_of(snapshots)
    if not entries:
        raise WeightPlotError("the architecture timeline needs at least one snapshot")
    layers = list(dict.fromkeys(k for e in entries for k in e.neuron_ids))
    if not layers:
        raise WeightPlotError("the snapshots carry no neuron IDs (take them with an engine)")
    x, xlabel = timeline(entries)
    fig = new_figure(8.0, 4.5)
    ax = fig.add_subplot()
    for layer in layers:
        widths = [e.widths.get(layer, float("nan")) for e in entries]
        ax.step(x, widths, where="post", marker="o", ms=3, label=layer)
    seq_x = {e.seq: xi for e, xi in zip(entries, x)}
    kinds = set()
    for change in changes:
        if getattr(change, "trial", None) == "rolled_back":
            continue  # a refused trial changed nothing
        at = _event_x(change, seq_x, xlabel)
        if at is not None:
            ax.axvline(at, color=EVENT_COLORS.get(change.kind, "grey"), ls=":", lw=1.2)
            kinds.add(change.kind)
    handles, _ = ax.get_legend_handles_labels()
    handles += [
        Line2D([], [], color=EVENT_COLORS.get(k, "grey"), ls=":", label=k) for k in sorted(kinds)
    ]
    ax.legend(handles=handles, fontsize="small", ncol=2 if len(handles) > 8 else 1)
    ax.set(title="Architecture over training: units per layer", xlabel=xlabel, ylabel="units")
    ax.grid(alpha=0.3)
    save_png(fig, path)
    return fig
