"""Re-point a live optimizer at resized parameters, slicing and extending its state.

Surgery (Torch-Pruning for removal, the engine's own code for growth) replaces ``nn.Parameter``
objects by new, resized ones. The optimizer still holds the old objects in its param groups and
keys its per-parameter state by them, so after surgery it must be told what happened. A
:class:`ParamChange` says it for one parameter: which old parameter became which new one, and,
for each resized dim, a :class:`DimRemap` — the new parameter's slices along ``dim`` are the old
slices ``keep`` (in that order) followed by ``added`` new slices (both types, and
:func:`remap_tensor`, live in :mod:`engine.surgery.param_change`; re-exported here).

:func:`remap_optimizer` then, for every change whose old parameter the optimizer holds:

* puts the new parameter at the old one's position in its param group (the group's list object,
  its other keys and every other parameter stay as they are);
* builds a new state dict for it: every tensor shaped like the old parameter (momentum buffers,
  Adam's ``exp_avg``/``exp_avg_sq``/``max_exp_avg_sq``, RMSprop's ``square_avg``, ``grad_avg``,
  Adagrad's ``sum``…) is ``index_select``-ed on the kept slices and extended with zero slices;
  every other value (``step`` counters, scalars, flags) is copied unchanged. Tensors keep their
  dtype and device. A parameter without state (never stepped, or frozen) gets none.

It never writes into the old state tensors, dicts or parameters: everything it installs is new.
So a surgery transaction can take an :func:`optimizer_snapshot` first and, if anything fails
later, :func:`restore_optimizer` puts back the same parameter objects and the same (bitwise
unchanged) state tensors (both in :mod:`engine.surgery.optimizer_rollback`, re-exported here).
A change that cannot be applied raises :class:`OptimizerRemapError` before the optimizer is
touched.

>>> import torch
>>> from torch import nn
>>> old = nn.Parameter(torch.randn(4, 3))
>>> opt = torch.optim.Adam([old], lr=0.1)
>>> old.grad = torch.ones(4, 3)
>>> opt.step()
>>> new = nn.Parameter(torch.cat([old.detach()[[0, 2]], torch.zeros(1, 3)]))  # keep 0, 2; add 1
>>> token = optimizer_snapshot(opt)
>>> remap_optimizer(opt, [ParamChange.along(old, new, dim=0, keep=[0, 2], added=1)])
>>> opt.param_groups[0]["params"][0] is new
True
>>> m, m_old = opt.state[new]["exp_avg"], token.state[old]["exp_avg"]
>>> torch.equal(m[:2], m_old[[0, 2]]), torch.count_nonzero(m[2]).item()
(True, 0)
>>> int(opt.state[new]["step"])
1
>>> restore_optimizer(opt, token)
>>> opt.param_groups[0]["params"][0] is old, new in opt.state
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from engine.errors import OptimizerRemapError
from engine.surgery.optimizer_rollback import (
    OptimizerSnapshot,
    optimizer_snapshot,
    restore_optimizer,
)
from engine.surgery.param_change import DimRemap, ParamChange, format_shape, remap_tensor

__all__ = [
    "DimRemap",
    "OptimizerRemapError",
    "OptimizerSnapshot",
    "ParamChange",
    "optimizer_snapshot",
    "remap_optimizer",
    "remap_tensor",
    "restore_optimizer",
]


def _remap_state_value(
    key: Any,
    value: Any,
    change: ParamChange,
    fill: Mapping[str, float],
) -> Any:
    """New value of one state entry (see :func:`remap_optimizer` for the rules)."""
    if not isinstance(value, Tensor):
        return value
    old_shape = tuple(change.old.shape)
    if value.dim() == 0:
        return value.clone()
    if tuple(value.shape) == old_shape:
        return remap_tensor(value, change.remaps, fill=fill.get(key, 0.0))
    # A factored statistic: same rank, each size equal to the parameter's or 1 (broadcast).
    if value.dim() == len(old_shape) and all(v in (p, 1) for v, p in zip(value.shape, old_shape)):
        along = [r for r in change.remaps if value.shape[r.dim] == old_shape[r.dim]]
        return remap_tensor(value, along, fill=fill.get(key, 0.0))
    if all(r.is_identity(old_shape[r.dim]) for r in change.remaps):
        return value.clone()  # nothing about the parameter changed: copy it as it is
    raise OptimizerRemapError(
        f"parameter of shape {format_shape(old_shape)}: optimizer state {key!r} has shape "
        f"{format_shape(value.shape)}, neither the parameter's shape nor a scalar, so it cannot be "
        f"remapped along dim(s) {[r.dim for r in change.remaps]}"
    )


def remap_optimizer(
    optimizer: torch.optim.Optimizer,
    changes: Iterable[ParamChange],
    *,
    fill: Mapping[str, float] | None = None,
) -> None:
    """Re-point ``optimizer`` from each change's old parameter to its new one, in place.

    For every param group, an old parameter is replaced by its new one at the same position
    (by identity; changes whose old parameter the optimizer does not hold are ignored). Its
    state, if it has any, moves to the new parameter as a new dict:

    * a tensor shaped like the old parameter is sliced on ``keep`` and extended with
      ``added`` slices along each remapped dim — zeros, or ``fill[key]`` for state key ``key``
      (e.g. ``fill={"sum": 0.1}`` for an Adagrad with ``initial_accumulator_value=0.1``);
    * a tensor of the same rank whose size is 1 on some dims (a factored statistic) is remapped
      along the dims where it has the parameter's size;
    * a 0-d tensor (``step``) is copied (cloned, same value, dtype and device); any non-tensor
      value (an int ``step``, ``None``, flags) is kept as it is;
    * any other tensor makes the change fail (e.g. L-BFGS's flat history).

    Param group keys other than the parameter list are untouched, and the list object itself
    is kept (only its items change). Nothing old is written to: old parameters, state dicts and
    state tensors stay valid for :func:`restore_optimizer`. Every check runs before the first
    modification; on :class:`OptimizerRemapError` the optimizer is unchanged.
    """
    fill = dict(fill or {})
    changes = list(changes)
    by_old: dict[int, ParamChange] = {}
    new_ids: set[int] = set()
    for change in changes:
        if not isinstance(change, ParamChange):
            raise OptimizerRemapError(f"changes must be ParamChange objects, got {change!r}")
        if id(change.old) in by_old:
            raise OptimizerRemapError(
                f"parameter of shape {format_shape(change.old.shape)} is changed twice"
            )
        if id(change.new) in new_ids:
            raise OptimizerRemapError(
                f"new parameter of shape {format_shape(change.new.shape)} replaces two parameters"
            )
        by_old[id(change.old)] = change
        new_ids.add(id(change.new))
    for change in changes:
        if id(change.new) in by_old and change.new is not change.old:
            raise OptimizerRemapError(
                f"new parameter of shape {format_shape(change.new.shape)} is also the old "
                "parameter of another change; chained changes are not supported"
            )

    # Phase 1 — plan every edit, touching nothing.
    held: dict[int, Tensor] = {}
    positions: list[tuple[list[Tensor], int, ParamChange]] = []
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            held[id(p)] = p
            change = by_old.get(id(p))
            if change is not None:
                positions.append((group["params"], i, change))
                if change.new.requires_grad != change.old.requires_grad:
                    raise OptimizerRemapError(
                        f"parameter of shape {format_shape(change.old.shape)} in param group {g}: "
                        f"requires_grad {change.old.requires_grad} -> "
                        f"{change.new.requires_grad}; a frozen parameter must stay frozen "
                        "(set new.requires_grad before remapping)"
                    )
    replaced = {id(c.old) for _, _, c in positions}
    for change in changes:
        if id(change.new) in held and id(change.new) not in replaced:
            shape = format_shape(change.new.shape)
            raise OptimizerRemapError(f"new parameter of shape {shape} is already in the optimizer")
    new_states: list[tuple[ParamChange, dict[Any, Any]]] = []
    for _, _, change in positions:
        old_state = optimizer.state.get(change.old)  # .get: never create an entry
        if old_state is None or change.old is change.new:
            continue
        new_states.append(
            (change, {k: _remap_state_value(k, v, change, fill) for k, v in old_state.items()})
        )

    # Phase 2 — commit: plain list/dict assignments, nothing left that can fail.
    for params, i, change in positions:
        params[i] = change.new
    for change, _ in new_states:
        optimizer.state.pop(change.old, None)
    for change, state in new_states:
        optimizer.state[change.new] = state
