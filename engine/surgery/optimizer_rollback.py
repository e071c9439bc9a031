"""Undo an optimizer remap: :func:`optimizer_snapshot` before surgery, :func:`restore_optimizer`
after a failure.

The snapshot is shallow (group dicts, parameter lists and state dicts by object), which is
enough because :func:`~engine.surgery.optimizer.remap_optimizer` installs new objects and never
writes into the old ones.

>>> import torch
>>> from torch import nn
>>> old = nn.Parameter(torch.zeros(2))
>>> opt = torch.optim.SGD([old], lr=0.1)
>>> token = optimizer_snapshot(opt)
>>> opt.param_groups[0]["params"][0] = nn.Parameter(torch.zeros(3))
>>> restore_optimizer(opt, token)
>>> opt.param_groups[0]["params"][0] is old
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from engine.errors import OptimizerRemapError

__all__ = ["OptimizerSnapshot", "optimizer_snapshot", "restore_optimizer"]


@dataclass(frozen=True, eq=False)
class OptimizerSnapshot:
    """What :func:`restore_optimizer` needs to undo remaps: the param group dicts (objects and
    shallow copies of their items), each group's parameter list (object and items), and the
    state mapping (parameter -> the same state dict objects). Shallow: valid as long as the
    state tensors are not written in place, i.e. until the next ``optimizer.step()``, which is
    the span of a surgery transaction. :func:`~engine.surgery.optimizer.remap_optimizer` never
    writes them."""

    optimizer_id: int
    groups: tuple[dict[str, Any], ...]
    group_items: tuple[dict[str, Any], ...]
    param_lists: tuple[tuple[list[Any], tuple[Any, ...]], ...]
    state: dict[Any, Any]


def optimizer_snapshot(optimizer: torch.optim.Optimizer) -> OptimizerSnapshot:
    """Capture ``optimizer``'s param groups and state mapping for :func:`restore_optimizer`."""
    groups = tuple(optimizer.param_groups)
    return OptimizerSnapshot(
        optimizer_id=id(optimizer),
        groups=groups,
        group_items=tuple(dict(g) for g in groups),
        param_lists=tuple((g["params"], tuple(g["params"])) for g in groups),
        state=dict(optimizer.state),
    )


def restore_optimizer(optimizer: torch.optim.Optimizer, token: OptimizerSnapshot) -> None:
    """Put ``optimizer`` back as it was when ``token`` was taken: the same group dict and list
    objects with the same items (so the same ``nn.Parameter`` objects), and the same state dict
    objects keyed by them; entries added since (e.g. for new parameters) are dropped. The
    ``optimizer.state`` and ``optimizer.param_groups`` containers are kept and refilled."""
    if not isinstance(token, OptimizerSnapshot) or token.optimizer_id != id(optimizer):
        raise OptimizerRemapError("the snapshot was not taken from this optimizer")
    optimizer.param_groups[:] = list(token.groups)
    for group, items, (params, saved) in zip(token.groups, token.group_items, token.param_lists):
        params[:] = saved
        group.clear()
        group.update(items)
    optimizer.state.clear()
    optimizer.state.update(token.state)
