"""Panel data from weight snapshots and gradient records: weight change per layer per epoch
(the layer × epoch heatmap) and gradient dynamics per parameter over steps.

Weight change compares each epoch's last snapshot with the previous epoch's (the first with
the snapshot taken before training, when there is one); units are matched by neuron ID, so
surgery between the two does not count as change. Layers are ranked by their mean relative
change, so a large model's page can show the top layers first.

>>> import tempfile, torch, torch.nn as nn
>>> from engine.weights import WeightTracker
>>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
>>> tracker = WeightTracker(model, tempfile.mkdtemp())
>>> for epoch in range(3):
...     with torch.no_grad():
...         for p in model[2].parameters():
...             _ = p.mul_(1.5)
...     _ = tracker.on_epoch(epoch)
>>> data = weight_change(tracker.snapshots())
>>> data["epochs"], data["layers"], [round(v, 3) for v in data["relative"]["2"]]
([1, 2], ['2', '0'], [0.5, 0.5])
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.dashboard.training import clean
from engine.dynamics.gradient_record import DERIVED, GradientHistory
from engine.weights.compare import compare_snapshots
from engine.weights.weight_snapshot import WeightSnapshot

GRADIENT_COLUMNS = {
    "near_zero_fraction": "share of gradient components near zero",
    "released_fraction": "near zero before, not any more",
    "sign_flip_fraction": "share of components whose gradient sign flipped",
    "grad_norm": "gradient norm",
    "weight_diff_norm": "weight step norm",
}
MAX_STEPS = 200  # gradient curves are thinned to at most this many recorded steps


def _per_epoch(snapshots: Sequence[WeightSnapshot]) -> list[WeightSnapshot]:
    """The last snapshot of each epoch, in training order (epoch None or < 0 counts as the
    snapshot before training and is kept only when it comes first)."""
    last: dict[int, WeightSnapshot] = {}
    for s in snapshots:
        epoch = -1 if s.entry.epoch is None or s.entry.epoch < 0 else s.entry.epoch
        if epoch == -1 and last:
            continue
        last[epoch] = s
    return [last[e] for e in sorted(last)]


def weight_change(
    snapshots: Sequence[WeightSnapshot], lineage: dict[int, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """``relative[layer]`` and ``l2[layer]``: one value per epoch (None where the layer was
    not in both snapshots), ``total`` per epoch, ``layers`` ranked by mean relative change."""
    chosen = _per_epoch(snapshots)
    epochs: list[int] = []
    relative: dict[str, list[float | None]] = {}
    l2: dict[str, list[float | None]] = {}
    total: list[float] = []
    previous = None
    for snap in chosen:
        current = snap.cached()
        if previous is not None:
            cmp = compare_snapshots(previous, current, lineage=lineage, on_unaligned="skip")
            modules = cmp.by_module()
            for name in modules:
                relative.setdefault(name, [None] * len(epochs))
                l2.setdefault(name, [None] * len(epochs))
            for name in relative:
                sums = modules.get(name)
                relative[name].append(None if sums is None else sums.relative)
                l2[name].append(None if sums is None else sums.l2)
            total.append(cmp.total.relative)
            epochs.append(int(current.entry.epoch if current.entry.epoch is not None else -1))
        previous = current
    means = {n: np.nanmean(_floats(v)) if any(x is not None for x in v) else -1.0
             for n, v in relative.items()}  # fmt: skip
    ranked = sorted(relative, key=lambda n: -means[n])
    return clean(
        {"epochs": epochs, "layers": ranked, "relative": relative, "l2": l2, "total": total,
         "snapshots": len(snapshots)}
    )  # fmt: skip


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def gradient_dynamics(history: GradientHistory) -> dict[str, Any]:
    """Per parameter (and ``"*"``, the whole model) the columns of :data:`GRADIENT_COLUMNS`
    over the recorded steps (thinned to :data:`MAX_STEPS`), parameters ranked by their mean
    near-zero share."""
    steps = np.asarray(history.steps)
    keep = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), MAX_STEPS)).astype(int))
    keep = keep if len(steps) else np.zeros(0, dtype=int)
    names = ["*", *history.parameters]
    columns = {col: {n: history.column(n, col)[keep] for n in names} for col in GRADIENT_COLUMNS}
    order = sorted(
        history.parameters,
        key=lambda n: -np.nan_to_num(np.nanmean(columns["near_zero_fraction"][n]), nan=-1.0)
        if len(keep) else 0.0,
    )  # fmt: skip
    return clean(
        {
            "steps": steps[keep],
            "parameters": order,
            "columns": columns,
            "labels": GRADIENT_COLUMNS,
            "derived": sorted(DERIVED),
            "recorded_steps": len(steps),
        }
    )


MOVING_COLUMNS = {
    "zero_grad_step": "mean |Δw| where the previous gradient was near zero",
    "other_step": "mean |Δw| elsewhere",
    "zero_grad": "components whose previous gradient was near zero",
    "grad_ema_norm": "‖EMA of the gradient‖",
    "grad_ema_cosine": "cosine of the gradient with its EMA",
    "weight_ema_distance": "‖w − EMA of w‖",
}


def moving_dynamics(history: Any) -> dict[str, Any]:
    """Like :func:`gradient_dynamics`, for a ``MovingAverageHistory`` (``moving_averages.json``):
    per parameter the columns of :data:`MOVING_COLUMNS`; ``"*"`` sums ``zero_grad`` and
    averages the rest over parameters; parameters ranked by their mean ``zero_grad_step``."""
    steps = np.asarray(history.steps)
    keep = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), MAX_STEPS)).astype(int))
    keep = keep if len(steps) else np.zeros(0, dtype=int)
    names = history.parameters
    columns: dict[str, dict[str, Any]] = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns average to NaN
        for col in MOVING_COLUMNS:
            per = {n: history.column(n, col)[keep] for n in names}
            stack = np.stack(list(per.values())) if per else np.zeros((0, len(keep)))
            model = np.nansum(stack, 0) if col == "zero_grad" else np.nanmean(stack, 0)
            columns[col] = {"*": model, **per}
        means = {n: np.nanmean(columns["zero_grad_step"][n]) for n in names}
    order = sorted(names, key=lambda n: -np.nan_to_num(means[n], nan=-1.0))
    return clean(
        {"steps": steps[keep], "parameters": order, "columns": columns, "labels": MOVING_COLUMNS,
         "recorded_steps": len(steps), "beta": history.beta, "eps": history.eps}
    )  # fmt: skip
