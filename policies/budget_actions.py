"""The plan actions of the budget policy: a fold for a layer, a prune for a coupled group.

Both take a scored :class:`~policies.budget_spaces.Space` and the greedy order's first units.

>>> sorted(n for n in globals() if n.endswith("_action"))
['fold_action', 'prune_action']
"""

from __future__ import annotations

import torch

from engine.plan.actions import FoldAction, PruneAction
from engine.stats.snapshot import StatsSnapshot
from policies.budget_spaces import Space
from policies.greedy import fold_coefficients, reconstruction_loss
from policies.guards import Guard

__all__ = ["fold_action", "prune_action"]


def fold_action(
    space: Space, snapshot: StatsSnapshot, guard: Guard, order: list[int], policy: str
) -> FoldAction:
    """The fold removing ``order`` (positions in ``space.free``) from a scored layer; claims
    its units from ``guard``."""
    layer = snapshot.layers[space.rep]
    gone = set(order)
    keep_local = [i for i in range(len(space.free)) if i not in gone]
    remove_local = sorted(order)
    cov = space.raw_cov
    coef_t = fold_coefficients(cov, space.ridge, keep_local, remove_local)
    loss = reconstruction_loss(cov, None, keep_local, remove_local, coef_t, gram=space.gram)
    keep = [space.free[i] for i in keep_local]
    remove = [space.free[i] for i in remove_local]
    guard.claim(space.rep, keep + remove, removes=len(remove))
    return FoldAction(
        layer=space.rep,
        keep=keep,
        remove=remove,
        keep_ids=[layer.neuron_ids[i] for i in keep],
        remove_ids=[layer.neuron_ids[i] for i in remove],
        coefficients=coef_t.tolist(),
        mean_keep=layer.mean[torch.tensor(keep)].tolist(),
        mean_remove=layer.mean[torch.tensor(remove)].tolist(),
        ridge=space.ridge,
        expected_cost=loss,
        reason="budget",
        policy=policy,
        evidence={
            "count": layer.count,
            "width_before": layer.num_units,
            "removed": len(remove),
            "relative_cost": loss / space.total if space.total > 0 else None,
        },
    )


def prune_action(
    space: Space, snapshot: StatsSnapshot, guard: Guard, order: list[int], policy: str
) -> PruneAction:
    """The prune removing ``order`` from a scored coupled group, on its first member, each
    channel replaced by the sum of the producers' means; claims the units in every member."""
    layer = snapshot.layers[space.rep]
    local = sorted(order)
    remove = [space.free[i] for i in local]
    sel = torch.tensor(local)
    cost = float(space.energy[sel][:, sel].sum().clamp_min(0))
    means = sum(snapshot.layers[m].mean for m in space.members)[torch.tensor(remove)]
    guard.claim_group(space.rep, remove, removes=len(remove))
    return PruneAction(
        layer=space.rep,
        local_indices=remove,
        neuron_ids=[layer.neuron_ids[i] for i in remove],
        constant_values=[float(v) for v in means],
        reason="budget",
        policy=policy,
        evidence={
            "count": min(snapshot.layers[m].count for m in space.members),
            "width_before": layer.num_units,
            "removed": len(remove),
            "coupled": space.members,
            "replacement": "sum of the producers' means (residual stream, no fold)",
            "expected_cost": cost,
            "relative_cost": cost / space.total if space.total > 0 else None,
        },
    )
