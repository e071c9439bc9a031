"""Panel data from the training record: surgery timeline, units per layer, per-layer
statistics and metrics over epochs. Everything returned is plain JSON (NaN as None).

>>> import tempfile, pathlib, torch
>>> from engine.history import TrainingHistory
>>> from engine.stats import Moments
>>> h = TrainingHistory()
>>> for e in range(2):
...     _ = h.log(e, {"fc": ([1, 2], Moments.from_samples(torch.rand(4, 2)))}, loss=1.0 - e / 4)
>>> data = history_panels(h)
>>> data["epochs"], data["units"]["fc"], data["metrics"]["loss"]
([0, 1], [2, 2], [1.0, 0.75])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.history import TrainingHistory
from engine.weights.changelog import ChangeEntry
from engine.weights.schema import SnapshotEntry

LAYER_STATS = {
    "mean": "mean activation (mean over units)",
    "variance": "activation variance (mean over units)",
    "firing_rate": "firing rate (mean over units)",
    "dead_fraction": "dead units (share with firing rate 0)",
}


def clean(value: Any) -> Any:
    """JSON-safe copy for the page: NaN and ±inf become None, floats keep 5 significant
    digits, numpy scalars and arrays become plain Python.

    >>> clean({"a": [np.float32(1 / 3), float("nan")], "b": np.arange(2)})
    {'a': [0.33333, None], 'b': [0, 1]}
    """
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return float(f"{value:.5g}") if math.isfinite(value) else None
    return value


def _column(values: Sequence[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _layer_stat(layer: dict[str, Any], stat: str) -> float:
    if stat == "dead_fraction":
        rates = _column(layer.get("firing_rate", []))
        rates = rates[np.isfinite(rates)]
        return float((rates == 0).mean()) if rates.size else math.nan
    values = _column(layer.get(stat, []))
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def history_panels(history: TrainingHistory) -> dict[str, Any]:
    """Epochs, metrics per epoch, units per layer per epoch and the per-layer statistics of
    :data:`LAYER_STATS` (``stats[stat][layer]`` is one value per epoch, None where the layer
    was not logged)."""
    epochs = history.epochs
    layers = list(dict.fromkeys(n for r in history.records for n in r.layers))
    metric_names = list(dict.fromkeys(k for r in history.records for k in r.metrics))
    units = {
        name: [len(r.layers[name]["neuron_ids"]) if name in r.layers else None
               for r in history.records]
        for name in layers
    }  # fmt: skip
    stats = {
        stat: {
            name: [_layer_stat(r.layers[name], stat) if name in r.layers else None
                   for r in history.records]
            for name in layers
        }
        for stat in LAYER_STATS
    }  # fmt: skip
    return clean(
        {
            "epochs": epochs,
            "layers": layers,
            "metrics": {k: history.metric(k) for k in metric_names},
            "units": units,
            "stats": stats,
            "stat_labels": LAYER_STATS,
        }
    )


def units_from_snapshots(entries: Sequence[SnapshotEntry]) -> dict[str, Any]:
    """Units per tracked layer at every weight snapshot (before and after each surgery
    included), in training order: ``{"labels": [...], "epochs": [...], "units": {layer: [...]}}``.
    """
    layers = list(dict.fromkeys(n for e in entries for n in e.neuron_ids))
    widths = [e.widths for e in entries]
    return {
        "labels": [f"{e.name} (epoch {e.epoch})" for e in entries],
        "epochs": [e.epoch for e in entries],
        "triggers": [e.trigger for e in entries],
        "units": {n: [w.get(n) for w in widths] for n in layers},
    }


def _metrics_at(history: TrainingHistory | None, epoch: int | None) -> dict[str, Any]:
    if history is None or epoch is None:
        return {}
    hit = [r.metrics for r in history.records if r.epoch == epoch]
    return dict(hit[-1]) if hit else {}


def timeline(entries: Sequence[ChangeEntry], history: TrainingHistory | None) -> dict[str, Any]:
    """The surgery timeline: one event per applied plan (its actions share the plan's
    fingerprint and time), each action with layer, kind, units and parameters before/after,
    measured output change and the trial's verdict; each event with the metrics of its epoch
    (``before``) and of the next logged epoch (``after``)."""
    events: list[dict[str, Any]] = []
    index: dict[tuple[Any, ...], dict[str, Any]] = {}
    for e in entries:
        key = (e.time, e.plan_fingerprint_before, e.epoch, e.step)
        event = index.get(key)
        if event is None:
            after_epoch = None
            if history is not None and e.epoch is not None:
                later = [r.epoch for r in history.records if r.epoch > e.epoch]
                after_epoch = min(later) if later else None
            event = index[key] = {
                "event": len(events),
                "epoch": e.epoch,
                "step": e.step,
                "time": e.time,
                "trial": e.trial,
                "trial_loss_before": e.trial_loss_before,
                "trial_loss_after": e.trial_loss_after,
                "before": _metrics_at(history, e.epoch),
                "after": _metrics_at(history, after_epoch),
                "after_epoch": after_epoch,
                "actions": [],
            }
            events.append(event)
        event["actions"].append(
            {
                "label": e.label,
                "kind": e.kind,
                "layer": e.layer,
                "reason": e.reason,
                "policy": e.policy,
                "width_before": e.width_before,
                "width_after": e.width_after,
                "params_before": e.params_before,
                "params_after": e.params_after,
                "params_delta": e.params_delta,
                "removed": len(e.removed_ids),
                "merged": sum(len(v) for v in e.merged_into.values()),
                "added": len(e.added_ids),
                "max_output_change": e.max_output_change,
                "max_output_change_eval": e.max_output_change_eval,
                "exact_expected": e.exact_expected,
                "note": e.note,
                "trial": e.trial,
            }
        )
    return clean({"events": events, "actions": len(entries)})
