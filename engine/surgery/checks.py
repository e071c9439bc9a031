"""Checks that need the modules themselves, run before surgery touches anything.

``engine.plan.validate_plan`` checks a plan against the layout (names, ranges, conflicts…);
these check it against the modules of each layer's coupled group: attention-head and
GroupNorm divisibility of the final widths, growth through modules that cannot grow or hold
the units at an offset (a concat), and GradMax's gradient matrices; tensors too large and
coefficients that would overflow (``engine.surgery.limits``), and the head size of Hugging
Face style attention (``engine.surgery.heads``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.surgery.groups import GroupMember
from engine.surgery.heads import head_problems
from engine.surgery.limits import coefficient_problems, growth_problems
from engine.surgery.resizers import resizer_for


def _removed(action: Any) -> int:
    if isinstance(action, PruneAction):
        return len(action.local_indices)
    if isinstance(action, MergeAction):
        return 1
    if isinstance(action, FoldAction):
        return len(action.remove)
    return 0


def gradmax_consumer(members: list[GroupMember]) -> GroupMember | None:
    """The single Linear consumer GradMax needs (one input column per unit), or None."""
    consumers = [m for m in members if m.side == "in" and resizer_for(m.module).consumes]
    if len(consumers) != 1 or not isinstance(consumers[0].module, nn.Linear):
        return None
    return consumers[0] if len(consumers[0].positions[0]) == 1 else None


def module_problems(
    labelled: list[tuple[str, Any]],
    groups: Mapping[str, list[GroupMember]],
    gradients: Mapping[str, torch.Tensor],
    *,
    model: nn.Module | None = None,
) -> list[str]:
    """Every reason the plan cannot be carried out on these modules (empty: it can);
    ``model`` adds the head sizes of Hugging Face style attention (``engine.surgery.heads``)."""
    problems = growth_problems(labelled, groups) + coefficient_problems(labelled, groups)
    if model is not None:
        problems += head_problems(labelled, groups, model)
    delta: dict[tuple[str, str], int] = defaultdict(int)
    first_label: dict[tuple[str, str], str] = {}
    for label, action in labelled:
        where = f"{label} (layer {action.layer!r})"
        members = groups.get(action.layer, [])
        change = action.count if isinstance(action, ExpandAction) else -_removed(action)
        for m in members:
            delta[m.key] += change * len(m.positions[0] if m.positions else [])
            first_label.setdefault(m.key, where)
        if not isinstance(action, ExpandAction):
            continue
        for m in members:
            if not resizer_for(m.module).grows:
                problems.append(f"{where}: {m.name!r} ({type(m.module).__name__}) cannot grow")
            elif not m.appendable():
                problems.append(
                    f"{where}: {m.name!r} holds the units at an offset (a concat): growth "
                    "appends units at the end of every axis"
                )
        if action.init == "gradmax":
            problems += _gradmax_problems(where, action, members, gradients)
    for m in {m.key: m for ms in groups.values() for m in ms}.values():
        final = m.size + delta[m.key]
        where = first_label[m.key]
        if isinstance(m.module, nn.MultiheadAttention) and final % m.module.num_heads:
            problems.append(
                f"{where}: {m.name!r} would have embed dim {final}, not divisible by its "
                f"num_heads={m.module.num_heads}"
            )
        groups = getattr(m.module, "num_groups", 1)
        grouped = isinstance(m.module, nn.GroupNorm) and 1 < groups < m.module.num_channels
        if grouped and final % groups:
            problems.append(
                f"{where}: {m.name!r} would have {final} channels, not divisible by its "
                f"num_groups={groups}"
            )
    return problems


def _gradmax_problems(where, action, members, gradients) -> list[str]:
    consumer = gradmax_consumer(members)
    producers = [m for m in members if m.side == "out" and isinstance(m.module, nn.Linear)]
    if consumer is None or len(producers) != 1:
        return [f"{where}: gradmax growth supports a Linear layer with one Linear consumer"]
    grad = gradients.get(action.layer)
    if grad is None:
        return [
            f"{where}: gradmax growth needs gradients={{{action.layer!r}: Σ δ·xᵀ}} "
            "(engine.surgery.gradmax_gradient computes it)"
        ]
    want = (consumer.module.out_features, producers[0].module.in_features)
    if tuple(grad.shape) != want:
        return [f"{where}: the gradient matrix has shape {tuple(grad.shape)}, expected {want}"]
    if action.count > min(want):
        return [f"{where}: gradmax can add at most {min(want)} units (rank of the gradient)"]
    return []
