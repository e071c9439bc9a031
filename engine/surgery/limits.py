"""Sizes and values surgery refuses: tensors too large to build, and non-finite results.

Three checks, each naming the action:

* :func:`growth_problems` (before anything is touched): growth that would make any tensor of
  the layer's group hold more than :data:`MAX_TENSOR_ELEMENTS` elements. The default, 2³¹,
  is 8 GiB of float32 in *one* tensor (before the optimizer's copies of it), more than any
  layer a plan of this library should create, and where 32-bit indexing in some kernels
  ends; a larger count is a typo or an attack, and would otherwise fail inside the allocator
  (or swap the machine to a halt). Set ``engine.surgery.limits.MAX_TENSOR_ELEMENTS`` to
  change it.
* :func:`coefficient_problems` (before anything is touched): merge/fold coefficients, means
  and constant values that are not finite, or whose fold into a consumer would overflow its
  dtype: ``max|W| · (1 + n·max|coef|·(1 + max|mean|))`` above ``finfo(dtype).max``
  (a bound on every folded entry, weights and bias).
* :func:`check_finite` (after each action, the catch-all): every tensor the action installed
  is finite wherever the tensor it replaced was; else :class:`~engine.errors.SurgeryError`
  and the transaction rolls back.

>>> import torch.nn as nn
>>> from engine.plan.actions import ExpandAction
>>> from engine.surgery.groups import GroupMember
>>> fc = nn.Linear(4, 6)
>>> group = {"fc": [GroupMember("fc", fc, "out", [[i] for i in range(6)], 6)]}
>>> growth_problems([("expand[0]", ExpandAction(layer="fc", count=10**12,
...                  init="zero_outgoing", reason="big"))], group)  # doctest: +ELLIPSIS
["expand[0] (layer 'fc'): growing by 1000000000000 units would give 'fc'.weight 4,000,...
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.errors import SurgeryError
from engine.plan.actions import ExpandAction, FoldAction, MergeAction, PruneAction
from engine.surgery.groups import GroupMember
from engine.surgery.resizers import consumer_weight_spec, resizer_for

__all__ = ["MAX_TENSOR_ELEMENTS", "check_finite", "coefficient_problems", "growth_problems"]

MAX_TENSOR_ELEMENTS = 2**31


def _tensor(module: nn.Module, path: str) -> torch.Tensor | None:
    owner, _, name = path.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, name, None)


def growth_problems(
    labelled: list[tuple[str, Any]], groups: Mapping[str, list[GroupMember]]
) -> list[str]:
    """One problem per expand action whose group would hold a tensor over
    ``MAX_TENSOR_ELEMENTS`` elements after the plan's growth (counts of one group add up)."""
    added: dict[tuple[str, str], int] = defaultdict(int)
    first: dict[tuple[str, str], tuple[str, Any, GroupMember]] = {}
    for label, action in labelled:
        if not isinstance(action, ExpandAction):
            continue
        for m in groups.get(action.layer, []):
            per_unit = len(m.positions[0]) if m.positions else 1
            added[m.key] += action.count * per_unit
            first.setdefault(m.key, (label, action, m))
    problems: dict[str, str] = {}
    limit = MAX_TENSOR_ELEMENTS
    for key, extra in added.items():
        label, action, m = first[key]
        for spec in resizer_for(m.module).axes(m.module, m.side):
            t = _tensor(m.module, spec.path)
            if t is None or t.dim() == 0:
                continue
            dim = spec.dim % t.dim()
            shape = list(t.shape)
            shape[dim] += extra * spec.blocks
            elements = math.prod(shape)
            if elements > limit and label not in problems:
                problems[label] = (
                    f"{label} (layer {action.layer!r}): growing by {action.count} units would "
                    f"give {m.name!r}.{spec.path} {elements:,} elements (shape {shape}), over "
                    f"the limit of {limit:,} (engine.surgery.limits.MAX_TENSOR_ELEMENTS); grow "
                    f"in smaller steps"
                )
    return list(problems.values())


def _values(action: Any) -> tuple[list[float], list[float], int]:
    """(coefficients, means, units folded) of an action that folds values into consumers."""
    if isinstance(action, MergeAction):
        return [action.alpha, action.beta], [], 1
    if isinstance(action, FoldAction):
        coefs = [c for row in action.coefficients for c in row]
        return coefs, [*action.mean_keep, *action.mean_remove], len(action.remove)
    if isinstance(action, PruneAction) and action.constant_values:
        return list(action.constant_values), [], len(action.local_indices)
    return [], [], 0


def coefficient_problems(
    labelled: list[tuple[str, Any]], groups: Mapping[str, list[GroupMember]]
) -> list[str]:
    """Non-finite coefficients, and coefficients whose fold would overflow a consumer's
    dtype (see the module docstring for the bound)."""
    problems = []
    for label, action in labelled:
        coefs, means, n = _values(action)
        if not coefs:
            continue
        where = f"{label} (layer {action.layer!r})"
        if not all(math.isfinite(v) for v in (*coefs, *means)):
            problems.append(f"{where}: coefficients or means are not finite")
            continue
        cmax = max(abs(v) for v in coefs)
        mmax = max((abs(v) for v in means), default=0.0)
        for m in groups.get(action.layer, []):
            if m.side != "in" or not resizer_for(m.module).consumes:
                continue
            try:
                w = _tensor(m.module, consumer_weight_spec(m.module)[0])
            except SurgeryError:  # consumes, but not through one weight
                continue
            if w is None or not w.is_floating_point() or w.numel() == 0:
                continue
            wmax = float(w.detach().abs().max())
            top = torch.finfo(w.dtype).max
            bound = wmax * (1.0 + n * cmax * (1.0 + mmax))
            if math.isfinite(wmax) and bound > top:
                problems.append(
                    f"{where}: coefficients up to {cmax:.3g} (means up to {mmax:.3g}) folded "
                    f"into {m.name!r} (weights up to {wmax:.3g}) could reach {bound:.3g}, past "
                    f"the largest {str(w.dtype).removeprefix('torch.')} ({top:.3g})"
                )
    return problems


def check_finite(
    model: nn.Module,
    touched: list[tuple[nn.Module, str, Any, Any]],
    members: list[GroupMember] | None = None,
) -> None:
    """Raise ``SurgeryError`` naming each tensor in ``touched`` (``Workspace.touched()``:
    ``(owner, name, old, new)``) that the surgery made non-finite (one host sync per device).
    ``members``: check only tensors of these modules (the ones one action rewrote)."""
    mine = None if members is None else {id(s) for m in members for s in m.module.modules()}
    new = [
        (owner, name, old, t)
        for owner, name, old, t in touched
        if isinstance(t, torch.Tensor)
        and t is not old
        and t.is_floating_point()
        and t.numel()
        and (mine is None or id(owner) in mine)
    ]
    if not new:
        return
    by_device: dict[torch.device, list[int]] = defaultdict(list)
    for k, entry in enumerate(new):
        by_device[entry[3].device].append(k)
    finite = [True] * len(new)
    for ks in by_device.values():  # one reduction and one transfer per device
        flags = torch.stack([torch.isfinite(new[k][3]).all() for k in ks]).tolist()
        for k, ok in zip(ks, flags):
            finite[k] = ok
    if all(finite):
        return
    names = {id(m): n for n, m in model.named_modules()}
    bad = [
        f"{names.get(id(owner), type(owner).__name__) or 'model'}.{name}"
        for (owner, name, old, _), ok in zip(new, finite)
        if not ok and (old is None or bool(torch.isfinite(old).all()))
    ]
    if bad:
        raise SurgeryError(
            f"wrote non-finite values into {bad} (coefficients or sizes too large for the "
            f"weights' dtype); rolled back"
        )
