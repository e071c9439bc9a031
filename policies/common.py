"""Small helpers shared by policies: evidence formatting, ID lookup, claiming units.

A policy that removes units claims them from the plan's :class:`~policies.guards.Guard` first,
so no unit takes part in two actions and no layer shrinks below its floor:
:func:`claim_removable` for an action that removes several units, :func:`claim_pair` for one
that folds a unit into another. :func:`exclude_nonfinite` (run once per plan, before every
policy) keeps units whose statistics saw NaN or ±inf out of every policy and says so.

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

from engine.errors import NonFiniteStatisticsError
from engine.layout import ModelLayout
from engine.plan.actions import PruneAction
from engine.stats.snapshot import LayerSnapshot, StatsSnapshot
from policies.guards import Guard

RESET_HINT = (
    "check the inputs (NaN/inf in the data) and the learning rate (a diverging step), then "
    "clear the statistics with engine.reset() and track again"
)


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
    sel = torch.tensor(idx, dtype=torch.long)
    constants = layer.mean[sel]
    broken = [i for i, ok in zip(idx, constants.isfinite().tolist()) if not ok]
    if broken:
        raise NonFiniteStatisticsError(
            f"policy {policy!r}, layer {name!r}: units {broken[:12]} have a non-finite mean, so "
            f"no constant can replace them; a policy must not remove them ({RESET_HINT})"
        )
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


def unjudged_units(layer: LayerSnapshot) -> list[int]:
    """Local indices of the units a policy must not judge: those that produced NaN or ±inf
    values (``Moments.nonfinite``), and those whose own moments overflowed to a non-finite
    value. Units grown by surgery (statistics NaN, "unknown") are not among them.

    >>> from engine.stats import Moments, merge_moments
    >>> good = Moments.from_samples(torch.tensor([[0.0, 1.0], [1.0, 3.0]]))
    >>> bad = Moments.from_samples(torch.tensor([[float("inf"), 2.0]]))  # a batch left out
    >>> unjudged_units(LayerSnapshot("fc", "Linear", [0, 1], merge_moments(good, bad)))
    [0]
    """
    m = layer.moments
    tainted = m.nonfinite > 0  # NaN (grown units: unknown) compares False
    if m.n > 0:
        known = ~m.fire.isnan()  # a count is NaN only for units grown after these samples
        tainted |= known & ~(m.mean.isfinite() & m.m2.isfinite() & m.abs_sum.isfinite())
    return torch.nonzero(tainted).flatten().tolist()


def exclude_nonfinite(snapshot: StatsSnapshot, guard: Guard) -> None:
    """Keep what saw non-finite values out of every policy of this plan, with a note each.

    Units that produced NaN/±inf (or whose moments overflowed) are claimed in ``guard``:
    no action removes them, keeps them in a merge or copies them. Their layer is not grown
    (its growth signals came through the same samples), nor is a layer whose growth signal
    saw non-finite rows. A layer that had no finite sample at all takes no action. Runs once
    per guard (the planner calls it before the first policy).

    >>> from engine.layout import LayerLayout, ModelLayout
    >>> from engine.stats import Moments, merge_moments
    >>> good = Moments.from_samples(torch.tensor([[0.0, 1.0], [1.0, 3.0]]))
    >>> bad = Moments.from_samples(torch.tensor([[float("nan"), 2.0]]))  # a batch left out
    >>> layer = LayerSnapshot("fc", "Linear", [0, 1], merge_moments(good, bad))
    >>> snap = StatsSnapshot({"fc": layer})
    >>> guard = Guard(ModelLayout({"fc": LayerLayout("fc", "Linear", 2, [0, 1])}))
    >>> exclude_nonfinite(snap, guard)
    >>> guard.claimed["fc"], guard.why_frozen("fc", "expand") is not None
    ({0}, True)
    >>> print(guard.notes[0][:80])
    non-finite statistics: layer 'fc': 1 of 2 unit(s) produced 1 non-finite value(s)
    """
    if guard.nonfinite_checked:
        return
    guard.nonfinite_checked = True
    for name, layer in snapshot.layers.items():
        if name not in guard.layout.layers:
            continue
        units = unjudged_units(layer)
        values = int(torch.nansum(layer.moments.nonfinite).item())
        growth_rows = 0 if layer.growth is None else layer.growth.nonfinite_rows
        if not units and not values and not growth_rows:
            continue
        head = f"non-finite statistics: layer {name!r}: "
        if layer.count == 0:
            guard.unjudged[name] = "no finite sample (every batch held NaN or ±inf)"
            guard.unjudged_all.add(name)
            guard.notes.append(
                f"{head}every batch held NaN or ±inf ({values} non-finite value(s)): no "
                f"action on this layer; {RESET_HINT}"
            )
            continue
        parts = []
        if units or values:
            guard.claim(name, units, removes=0)
            guard.unjudged_units[name] = set(units)
            parts.append(
                f"{len(units)} of {layer.num_units} unit(s) produced {values} non-finite "
                f"value(s) (NaN or ±inf; the batches holding them are left out of the "
                f"statistics): "
                f"units {units[:12]}{' …' if len(units) > 12 else ''} are not judged (not "
                "removed, merged or copied)"
            )
        if growth_rows:
            parts.append(f"its growth signal left out {growth_rows} non-finite row(s)")
        guard.unjudged[name] = "its statistics saw non-finite values (see the notes)"
        guard.notes.append(f"{head}{'; '.join(parts)}; the layer is not grown; {RESET_HINT}")


def judged_guard(snapshot: StatsSnapshot, layout: ModelLayout, guard: Guard | None) -> Guard:
    """``guard``, or a fresh one for ``layout`` when None, with :func:`exclude_nonfinite`
    applied (a policy called on its own excludes non-finite units as the planner does)."""
    guard = guard or Guard(layout)
    exclude_nonfinite(snapshot, guard)
    return guard
