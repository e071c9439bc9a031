"""One member of a Torch-Pruning dependency group, classified by the axis it prunes.

``engine.layout.build`` walks each tracked layer's group member by member;
``engine.layout.params`` counts the parameters one index of a member carries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch_pruning as tp


@dataclass
class DependencyMember:
    """One item of a pruning group, classified."""

    module: Any
    node: Any
    idxs: list[int]
    roots: list[int]
    is_in: bool  # the handler prunes the target's input axis
    is_out: bool  # the handler prunes the target's output axis (both for norms, ops, MHA)


def classify_member(graph: tp.DependencyGraph, item: Any) -> DependencyMember:
    """Classify one item of a Torch-Pruning group: which axis of its target it prunes."""
    dep = item.dep
    target = dep.target.module
    pruner = graph.get_pruner_of_module(target)
    is_out = pruner is not None and dep.handler == pruner.prune_out_channels
    is_in = pruner is not None and dep.handler == pruner.prune_in_channels
    roots = item.root_idxs if item.root_idxs is not None else list(item.idxs)
    return DependencyMember(target, dep.target, list(item.idxs), list(roots), is_in, is_out)


def unit_positions(idxs: list[int], roots: list[int | None], units: int) -> list[list[int]]:
    """Per unit of the layer, the sorted positions that carry it on a member's axis (a
    Torch-Pruning group item's ``idxs`` and their ``root_idxs``).

    >>> unit_positions([0, 1, 2, 3], [0, 0, 1, 1], 2)
    [[0, 1], [2, 3]]
    """
    positions: list[list[int]] = [[] for _ in range(units)]
    for idx, root in zip(idxs, roots, strict=False):
        if root is not None and 0 <= root < units:
            positions[root].append(int(idx))
    return [sorted(p) for p in positions]


def appendable(positions: list[list[int]], size: int) -> bool:
    """Whether new units can be appended at the end of an axis of ``size``: the positions
    cover it whole, unit after unit, in equal runs (not so for one branch of a concat).

    >>> appendable([[0, 1], [2, 3]], 4), appendable([[4], [5]], 8)
    (True, False)
    """
    flat = [p for pos in positions for p in pos]
    return flat == list(range(size)) and len({len(p) for p in positions}) == 1
