"""Per-layer numbers and surgery events as flat ``{tag: float}`` metrics, for loggers.

Shared by the Lightning callback (the trainer's loggers), the Hugging Face callback (the
Trainer's ``log``) and the TensorBoard writer. Everything is read from the engine's own
statistics (``engine.layer_stats``: per rank, no collective) with a handful of reductions per
layer: never one scalar per neuron.

>>> import torch, torch.nn as nn
>>> from engine import NeuronEngine
>>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> engine = NeuronEngine(model)
>>> with engine.tracking():
...     _ = model(torch.randn(16, 4))
>>> summary = layer_summaries(engine)["0"]
>>> summary["width"], summary["params"]
(8.0, 40.0)
>>> sorted(flat_metrics(engine))[:3]
['engine/0/dead_fraction', 'engine/0/firing_rate', 'engine/0/mean_abs']
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["flat_metrics", "layer_summaries", "surgery_metrics"]


def _mean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def layer_summaries(engine: Any) -> dict[str, dict[str, float]]:
    """Per tracked layer: ``width``, ``params`` (of its module), ``dead_fraction``,
    ``mean_abs`` and ``firing_rate`` (means over its units), ``saturation`` (mean; only for
    bounded activations) and ``samples`` (observations since the last reset)."""
    out: dict[str, dict[str, float]] = {}
    for name, layer in engine.layers.items():
        stats = engine.layer_stats(name)
        width = stats.num_units
        row = {
            "width": float(width),
            "params": float(sum(p.numel() for p in layer.module.parameters())),
            "samples": float(stats.count),
        }
        if stats.count > 0 and width > 0:
            row["dead_fraction"] = float(stats.dead.sum()) / width
            row["mean_abs"] = _mean(stats.mean_abs)
            row["firing_rate"] = _mean(stats.firing_rate)
            if stats.bounds is not None:
                row["saturation"] = _mean(stats.saturation)
        out[name] = row
    return out


def flat_metrics(engine: Any, prefix: str = "engine") -> dict[str, float]:
    """:func:`layer_summaries` as ``{"engine/<layer>/<figure>": value}`` plus
    ``engine/params`` (the whole tracked model); NaN figures are left out."""
    metrics = {
        f"{prefix}/{layer}/{key}": value
        for layer, row in layer_summaries(engine).items()
        for key, value in row.items()
        if math.isfinite(value)
    }
    metrics[f"{prefix}/params"] = float(sum(p.numel() for p in engine.model.parameters()))
    return metrics


def surgery_metrics(record: Any, prefix: str = "engine/surgery", *, accepted: bool = True
                    ) -> dict[str, float]:  # fmt: skip
    """One surgery (a ``SurgeryRecord``) as metrics: parameters before and after, units
    removed and added, the measured output change, and whether it was kept."""
    removed = sum(max(0, a.width_before - a.width_after) for a in record.actions)
    added = sum(max(0, a.width_after - a.width_before) for a in record.actions)
    metrics = {
        f"{prefix}/params_before": float(record.params_before),
        f"{prefix}/params_after": float(record.params_after),
        f"{prefix}/units_removed": float(removed),
        f"{prefix}/units_added": float(added),
        f"{prefix}/accepted": 1.0 if accepted else 0.0,
    }
    change = record.max_output_change
    if change is not None and math.isfinite(change):
        metrics[f"{prefix}/max_output_change"] = float(change)
    return metrics
