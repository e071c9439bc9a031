"""Small helpers shared by policies: evidence formatting and ID lookup."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from engine.snapshot import LayerSnapshot


def floats(values: torch.Tensor | Sequence[float], digits: int = 6) -> list[float | None]:
    """JSON-safe rounded floats (NaN/inf → None)."""
    out: list[float | None] = []
    for v in torch.as_tensor(values, dtype=torch.float64).flatten().tolist():
        out.append(round(v, digits) if math.isfinite(v) else None)
    return out


def ids(layer: LayerSnapshot, local_indices: Sequence[int]) -> list[int]:
    return [layer.neuron_ids[i] for i in local_indices]


def enough_samples(layer: LayerSnapshot, min_samples: int) -> bool:
    return layer.count >= min_samples
