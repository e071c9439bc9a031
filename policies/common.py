"""Small helpers shared by policies: evidence formatting, ID lookup, claiming units.

A policy that removes units claims them from the plan's :class:`~policies.guards.Guard` first,
so no unit takes part in two actions and no layer shrinks below its floor:
:func:`claim_removable` for an action that removes several units, :func:`claim_pair` for one
that folds a unit into another.

>>> from engine.layout import LayerLayout, ModelLayout
>>> guard = Guard(ModelLayout({"fc": LayerLayout("fc", "Linear", 8, list(range(8)))}))
>>> claim_removable(guard, "fc", [5, 2, 0])
[5, 2, 0]
>>> claim_pair(guard, "fc", keep=1, remove=2), claim_pair(guard, "fc", keep=1, remove=3)
(False, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from engine.plan.actions import PruneAction
from engine.stats.snapshot import LayerSnapshot
from policies.guards import Guard


def floats(values: torch.Tensor | Sequence[float], digits: int = 6) -> list[float | None]:
    """JSON-safe rounded floats (NaN/inf → None)."""
    out: list[float | None] = []
    for v in torch.as_tensor(values, dtype=torch.float64).flatten().tolist():
        out.append(round(v, digits) if math.isfinite(v) else None)
    return out


def ids(layer: LayerSnapshot, local_indices: Sequence[int]) -> list[int]:
    return [layer.neuron_ids[i] for i in local_indices]


def claim_removable(
    guard: Guard,
    name: str,
    candidates: Iterable[int],
    kind: str = "prune",
    limit: int | None = None,
) -> list[int]:
    """Claim, for one ``kind`` action on layer ``name``, the ``candidates`` (best first) that
    it may still remove: not claimed by an earlier action, not reserved, and no more than the
    guard allows (and ``limit``). Returns them in the candidates' order; [] claims nothing.

    >>> from engine.layout import LayerLayout, ModelLayout
    >>> guard = Guard(ModelLayout({"fc": LayerLayout("fc", "Linear", 8, list(range(8)))}))
    >>> claim_removable(guard, "fc", [7, 3, 1], limit=2), claim_removable(guard, "fc", [3, 4])
    ([7, 3], [4])
    """
    allowed = guard.removable(name, kind)
    if limit is not None:
        allowed = min(allowed, limit)
    idx = guard.removable_units(name, candidates)[:allowed]
    idx = idx[: guard.divisible(name, len(idx))]  # heads / norm groups keep equal sizes
    if idx:
        guard.claim(name, idx, removes=len(idx))
    return idx


def claim_pair(guard: Guard, name: str, keep: int, remove: int) -> bool:
    """Claim ``keep`` and ``remove`` for one action that folds ``remove`` into ``keep`` (one
    unit removed). False, claiming nothing, when an earlier action claimed either unit or
    ``remove`` is reserved (a net2net source or a young unit may be kept, never removed).
    The caller checks the layer's removal budget.

    >>> from engine.layout import LayerLayout, ModelLayout
    >>> guard = Guard(ModelLayout({"fc": LayerLayout("fc", "Linear", 8, list(range(8)))}))
    >>> guard.reserve("fc", [0])
    >>> claim_pair(guard, "fc", 1, 0), claim_pair(guard, "fc", 0, 1), claim_pair(guard, "fc", 2, 1)
    (False, True, False)
    """
    if not guard.free(name, [keep]) or not guard.removable_units(name, [remove]):
        return False
    guard.claim(name, [keep, remove], removes=1)
    return True


def prune_units(
    name: str,
    layer: LayerSnapshot,
    idx: list[int],
    reason: str,
    policy: str,
    layer_evidence: Mapping[str, Any] | None = None,
    **evidence: torch.Tensor,
) -> PruneAction:
    """A prune action whose units are replaced by their mean (folded into the consumer bias).

    ``evidence`` holds per-unit tensors (the pruned units' values are recorded), and
    ``layer_evidence`` layer-wide figures recorded as they are, after them.

    >>> from engine.stats import Moments
    >>> x = torch.tensor([[0.0, 1.0, 2.0], [0.0, 3.0, 2.0]])
    >>> layer = LayerSnapshot("fc", "Linear", [7, 8, 9], Moments.from_samples(x))
    >>> a = prune_units("fc", layer, [2], "constant", "dead", {"note": 1}, mean=layer.mean)
    >>> a.neuron_ids, a.constant_values, a.evidence
    ([9], [2.0], {'count': 2, 'mean': [2.0], 'note': 1})
    """
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
            **(layer_evidence or {}),
        },
    )
