"""Aggregate statistics of weight tensors over a run's snapshots, with your own functions.

``trajectory_aggregates(snapshots, functions=…)`` applies every aggregate to every chosen
tensor of every snapshot (each snapshot's file read once) and returns
``{aggregate: {tensor: values per snapshot}}`` (NaN where a snapshot lacks the tensor). An
aggregate is any function of one tensor (float64, its snapshot's shape) to a number; the
defaults are :data:`DEFAULT_AGGREGATES`.

>>> import tempfile, torch, torch.nn as nn
>>> from engine.weights import WeightTracker
>>> model = nn.Linear(2, 2)
>>> tracker = WeightTracker(model, tempfile.mkdtemp(), background=False)
>>> for epoch in range(2):
...     with torch.no_grad():
...         _ = model.weight.fill_(epoch + 1.0)
...     _ = tracker.on_epoch(epoch)
>>> out = trajectory_aggregates(tracker.snapshots(), ["weight"],
...                             functions={"sum": lambda w: w.sum()}, defaults=False)
>>> out["sum"]["weight"].tolist()
[4.0, 8.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from engine.errors import ConfigurationError
from engine.weights.weight_snapshot import WeightSnapshot

Aggregate = Callable[[torch.Tensor], "float | torch.Tensor"]

DEFAULT_AGGREGATES: dict[str, Aggregate] = {
    "l2": lambda w: w.norm(),
    "mean_abs": lambda w: w.abs().mean(),
    "std": lambda w: w.std() if w.numel() > 1 else torch.zeros(()),
    "max_abs": lambda w: w.abs().max(),
    "zero_fraction": lambda w: (w == 0).to(torch.float64).mean(),
}


def _value(fn_name: str, tensor: str, value: object) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ConfigurationError(
                f"aggregate {fn_name!r} on {tensor!r}: expected one number, got a tensor of "
                f"shape {tuple(value.shape)}"
            )
        value = value.item()
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"aggregate {fn_name!r} on {tensor!r}: expected a number, got {value!r}"
        ) from None


def trajectory_aggregates(
    snapshots: Sequence[WeightSnapshot],
    tensors: Sequence[str] | None = None,
    *,
    functions: Mapping[str, Aggregate] | None = None,
    defaults: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """``{aggregate: {tensor: (len(snapshots),) float64}}`` (see the module docstring).

    ``tensors``: names (default: every floating parameter of any snapshot, in model order);
    ``functions``: your aggregates, added to the defaults (``defaults=False``: only yours).
    """
    chosen: dict[str, Aggregate] = dict(DEFAULT_AGGREGATES) if defaults else {}
    for name, fn in (functions or {}).items():
        if not callable(fn):
            raise ConfigurationError(f"aggregate {name!r}: expected a function, got {fn!r}")
        chosen[name] = fn
    if not chosen:
        raise ConfigurationError("no aggregate: give functions or keep defaults=True")
    if tensors is None:
        tensors = list(dict.fromkeys(n for s in snapshots for n in s.entry.parameters))
    known = {n for s in snapshots for n in s.entry.shapes}
    missing = [t for t in tensors if t not in known]
    if missing:
        raise ConfigurationError(
            f"tensors {missing[:6]} are in no snapshot; known: {sorted(known)[:12]}"
        )
    out = {a: {t: np.full(len(snapshots), math.nan) for t in tensors} for a in chosen}
    for i, snap in enumerate(snapshots):
        loaded = snap.load()
        for t in tensors:
            w = loaded.get(t)
            if w is None or not w.is_floating_point():
                continue
            w = w.detach().to(torch.float64)
            for a, fn in chosen.items():
                out[a][t][i] = _value(a, t, fn(w))
    return out
