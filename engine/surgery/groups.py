"""The modules that hold a tracked layer's units, read from Torch-Pruning's dependency graph.

For a tracked layer, its pruning group over all its units lists every module whose tensors
follow those units: the layer itself and residual-coupled producers ("out"), norms and other
pass-through modules ("out" too: their one axis is the unit axis), and consumers ("in").
Each member gives, per unit of the layer, its positions on the member's axis (one for a
Linear consumer, ``H·W`` after a flatten, an offset after a concat).

>>> import torch, torch.nn as nn
>>> from engine.layout.trace import trace_graph
>>> model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
>>> graph, _, _ = trace_graph(model, torch.randn(2, 4), None)
>>> [(m.name, m.side, m.positions[1]) for m in unit_group(model, graph, "0")]
[('0', 'out', [1]), ('1', 'out', [1]), ('3', 'in', [1])]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch_pruning as tp
from torch import nn

from engine.errors import SurgeryError
from engine.layout.members import appendable, unit_positions
from engine.surgery.resizers import resizer_for

__all__ = ["GroupMember", "unit_group"]


@dataclass
class GroupMember:
    """One module of a layer's group: ``side`` is ``"out"`` (its output axis, or its only
    axis for norms and attention) or ``"in"``; ``positions[u]`` are the positions on that axis
    that carry the layer's unit ``u``, and ``size`` is the axis length."""

    name: str
    module: nn.Module
    side: str
    positions: list[list[int]]
    size: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.side)

    def appendable(self) -> bool:
        """Whether new units can be appended at the end of this member's axis: its positions
        cover the whole axis, unit after unit (not an offset inside a concat)."""
        return appendable(self.positions, self.size)


def _axis_size(member_module: nn.Module, pruner, side: str) -> int:
    get = pruner.get_out_channels if side == "out" else pruner.get_in_channels
    size = get(member_module)
    if size is None:
        raise SurgeryError(f"cannot read the {side}-channel count of {member_module}")
    return int(size)


def unit_group(model: nn.Module, graph: tp.DependencyGraph, layer: str) -> list[GroupMember]:
    """Every module holding ``layer``'s units, with their positions (see the module doc).

    Raises:
        SurgeryError: Torch-Pruning cannot build the group, or a member is a type surgery
            cannot resize (an unwrapped ``nn.Parameter``, an unregistered module type).
    """
    names = {m: n for n, m in model.named_modules()}
    module = model.get_submodule(layer)
    pruner = graph.get_pruner_of_module(module)
    if pruner is None or module not in graph.module2node:
        raise SurgeryError(f"layer {layer!r} is not in the traced graph (unused in forward?)")
    units = int(pruner.get_out_channels(module))
    try:
        group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(units)))
    except Exception as exc:  # Torch-Pruning cannot follow this graph
        raise SurgeryError(f"layer {layer!r}: Torch-Pruning cannot group its units: {exc}") from exc
    members: dict[tuple[str, str], GroupMember] = {}
    for item in group:
        dep = item.dep
        target = dep.target.module
        if isinstance(target, nn.Parameter):
            raise SurgeryError(
                f"layer {layer!r}: its units reach an unwrapped nn.Parameter; surgery resizes "
                f"modules only"
            )
        if target not in names:  # Torch-Pruning's own ops (add, flatten, concat…)
            continue
        member_pruner = graph.get_pruner_of_module(target)
        if member_pruner is None:
            continue
        is_out = dep.handler == member_pruner.prune_out_channels
        is_in = dep.handler == member_pruner.prune_in_channels
        if not (is_out or is_in):
            continue
        resizer_for(target)  # raises for unknown types
        side = "out" if is_out else "in"
        roots = item.root_idxs if item.root_idxs is not None else list(item.idxs)
        positions = unit_positions(list(item.idxs), list(roots), units)
        key = (names[target], side)
        if key in members:
            continue
        members[key] = GroupMember(
            name=names[target],
            module=target,
            side=side,
            positions=positions,
            size=_axis_size(target, member_pruner, side),
        )
    return list(members.values())
