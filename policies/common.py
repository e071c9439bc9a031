"""Small helpers shared by policies: evidence formatting and ID lookup."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from engine.plan.actions import PruneAction
from engine.stats.snapshot import LayerSnapshot


def floats(values: torch.Tensor | Sequence[float], digits: int = 6) -> list[float | None]:
    """JSON-safe rounded floats (NaN/inf → None)."""
    out: list[float | None] = []
    for v in torch.as_tensor(values, dtype=torch.float64).flatten().tolist():
        out.append(round(v, digits) if math.isfinite(v) else None)
    return out


def ids(layer: LayerSnapshot, local_indices: Sequence[int]) -> list[int]:
    return [layer.neuron_ids[i] for i in local_indices]


def prune_units(
    name: str, layer: LayerSnapshot, idx: list[int], reason: str, policy: str, **evidence
) -> PruneAction:
    """A prune action whose units are replaced by their mean (folded into the consumer bias)."""
    sel = torch.tensor(idx)
    return PruneAction(
        layer=name,
        local_indices=idx,
        neuron_ids=ids(layer, idx),
        constant_values=floats(layer.mean[sel], 9),
        reason=reason,
        policy=policy,
        evidence={
            "count": layer.count,
            **{key: floats(value[sel]) for key, value in evidence.items()},
        },
    )
